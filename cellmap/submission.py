"""CellMap submission-style zarr hierarchies ``<root>/crop<ID>/<class>``: write, read, view on a grid, zip.

Format (the challenge's ``submission_data_format.rst``): a zarr **v2** group whose children are
``crop<ID>`` groups; each class is a single-scale array with attributes ``voxel_size`` and
``translation`` ((z, y, x) in nm, translation = centre of voxel 0; ``shape`` is written too), or
an OME-NGFF 0.4 multiscale group (its first dataset is read). The evaluator's truth
(``ground_truth.zarr``) and a dataset's ``labels/groundtruth`` folder have the same layout.
Semantic arrays hold 0/1, instance arrays 0 plus object IDs (an unsigned type wide enough for the
largest ID: never wrapped to uint8). The zip holds the hierarchy's contents at its top level, as
``csc pack-results`` writes it.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np

from cellmap import _zarr
from cellmap.errors import CellMapError
from cellmap.grid import Grid

__all__ = [
    "SubmissionError",
    "LabelArray",
    "OnGrid",
    "crop_name",
    "label_dtype",
    "grid_of_attrs",
    "read_label",
    "read_hierarchy",
    "read_truth",
    "write_label",
    "LabelWriter",
    "zip_submission",
]

_VOXEL_KEYS = ("voxel_size", "resolution", "scale")
_OFFSET_KEYS = ("translation", "offset")
_EPS = 1e-6


class SubmissionError(CellMapError):
    """A submission or truth hierarchy that cannot be read or written as asked."""


@dataclass(frozen=True)
class LabelArray:
    """One class of one crop: the (lazy) zarr array, its world grid and where it lives."""

    array: Any
    grid: Grid
    path: str


def crop_name(crop) -> str:
    """``crop<ID>`` from ``7``, ``"7"`` or ``"crop7"`` (a crop's group name)."""
    s = str(crop).strip()
    if s.startswith("crop"):
        return s
    if s.isdigit():
        return f"crop{int(s)}"
    raise SubmissionError(f"crop {crop!r} is neither a number nor a 'crop<ID>' name")


def label_dtype(max_value: int) -> np.dtype:
    """Smallest unsigned dtype holding ``max_value`` (instance IDs are never wrapped)."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise SubmissionError(f"label value {max_value} does not fit in uint64")


def _vec(attrs: Dict[str, Any], keys: Sequence[str], where: str, what: str):
    for k in keys:
        if k in attrs:
            v = attrs[k]
            if isinstance(v, dict):  # e.g. {"z": .., "y": .., "x": ..}
                v = [v[a] for a in ("z", "y", "x")]
            return tuple(float(x) for x in v)
    raise SubmissionError(f"{where}: no {what} attribute (looked for {', '.join(keys)}); write "
                          f"{keys[0]} as a (z, y, x) list in nm, or an OME-NGFF multiscale group")


def grid_of_attrs(attrs: Dict[str, Any], shape: Sequence[int], where: str) -> Grid:
    """The grid of a single-scale array from its ``voxel_size``/``translation`` attributes
    (aliases ``resolution``/``scale`` and ``offset``), (z, y, x) in nm."""
    vs = _vec(attrs, _VOXEL_KEYS, where, "voxel size")
    tr = _vec(attrs, _OFFSET_KEYS, where, "translation")
    if not (len(vs) == len(tr) == len(shape) == 3):
        raise SubmissionError(f"{where}: voxel size {vs}, translation {tr} and shape "
                              f"{tuple(shape)} must each have 3 axes (z, y, x)")
    return Grid(vs, tr, tuple(int(s) for s in shape))


def _ngff_s0(location: str) -> LabelArray:
    from cellmap.multiscale import read_multiscale

    ms = read_multiscale(location, strict_pyramid=False, require_translation=False)
    level = ms.finest
    sub = ms.array_location(level)
    return LabelArray(_zarr.open_array(sub), level.grid, sub)


def read_label(location: str) -> LabelArray:
    """One class array (``voxel_size``/``translation`` attributes) or OME-NGFF group (finest level)."""
    attrs = _zarr.read_attrs(location)
    if os.path.exists(os.path.join(_zarr.local_path(location), ".zarray")):
        arr = _zarr.open_array(location)
        return LabelArray(arr, grid_of_attrs(attrs, arr.shape, location), location)
    if "multiscales" in attrs:
        return _ngff_s0(location)
    raise SubmissionError(f"{location}: a class must be an array with voxel_size/translation "
                          "attributes or an OME-NGFF multiscale group")


def read_hierarchy(root, skip: Sequence[str] = ("all",)) -> Dict[str, Dict[str, LabelArray]]:
    """``{crop name: {class name: LabelArray}}`` of a local hierarchy ``root/crop<ID>/<class>``.

    Crop folders named by number alone are read as ``crop<ID>``; a root holding a single
    ``*.zarr`` folder and no crops is descended into (as the challenge hoists a nested zarr).
    Classes named in ``skip`` (the combined ``all`` array) are left out; ``<class>_mask``
    arrays are returned like classes. Arrays are opened lazily (nothing is read).
    """
    root = str(root)
    path = _zarr.local_path(root)
    if not os.path.isdir(path):
        raise SubmissionError(f"{path}: no such folder; pass the submission.zarr (or truth) "
                              "hierarchy holding crop<ID> groups")
    names = [n for n in _zarr.child_names(root) if not n.startswith(".")]
    if not names:
        nested = [n for n in os.listdir(path) if n.endswith(".zarr")
                  and os.path.isdir(os.path.join(path, n))]
        if len(nested) == 1:
            return read_hierarchy(os.path.join(path, nested[0]), skip)
        raise SubmissionError(f"{path}: no crop<ID> groups inside (and no single nested .zarr); "
                              "is this the right folder?")
    out: Dict[str, Dict[str, LabelArray]] = {}
    for n in names:
        cpath = _zarr.join(root, n)
        if not os.path.exists(os.path.join(_zarr.local_path(cpath), ".zgroup")):
            continue
        try:
            cname = crop_name(n)
        except SubmissionError:
            continue
        labels = {}
        for c in _zarr.child_names(cpath):
            if c.startswith(".") or c in skip:
                continue
            labels[c] = read_label(_zarr.join(cpath, c))
        out[cname] = labels
    return out


def read_truth(source, usage: Optional[str] = None) -> Dict[str, Dict[str, LabelArray]]:
    """Truth as ``{crop name: {class name: LabelArray}}`` from a hierarchy folder (see
    :func:`read_hierarchy`), a list of them, or a CellMap ``datasplit.csv`` (each row's crop
    group with the classes its bracket lists; ``usage`` keeps only "train" or "validate" rows).
    A crop found twice is an error."""
    if isinstance(source, (list, tuple)):
        parts = [read_truth(s, usage) for s in source]
    elif str(source).endswith(".csv"):
        from cellmap.datasplit import read_datasplit

        parts = []
        for row in read_datasplit(str(source)):
            if usage is not None and row.usage != usage:
                continue
            labels = {c: read_label(_zarr.join(row.crop_location, c)) for c in row.classes}
            parts.append({crop_name(row.crop): labels})
    else:
        return read_hierarchy(source)
    out: Dict[str, Dict[str, LabelArray]] = {}
    for part in parts:
        for crop, labels in part.items():
            if crop in out:
                raise SubmissionError(f"{source}: {crop} appears twice; crop IDs must be unique")
            out[crop] = labels
    return out


def _axis_map(src_grid: Grid, dst_grid: Grid, axis: int, start: int, stop: int) -> np.ndarray:
    """Source index (or -1 outside) whose voxel contains each destination voxel centre."""
    centres = dst_grid.translation_nm[axis] + np.arange(start, stop) * dst_grid.voxel_size_nm[axis]
    f = (centres - src_grid.corner_nm[axis]) / src_grid.voxel_size_nm[axis]
    idx = np.floor(f + _EPS).astype(np.int64)
    idx[(idx < 0) | (idx >= src_grid.shape[axis])] = -1
    return idx


class OnGrid:
    """A read-only (z, y, x) view of ``array`` (on ``grid``) as seen on ``target``.

    Each target voxel takes the source voxel containing its centre (nearest neighbour; exact for
    grids of one voxel size offset by whole voxels, the case of a prediction exported to the crop
    grid); target voxels outside the source read 0. Slicing reads only the source box needed.
    """

    def __init__(self, array, grid: Grid, target: Grid):
        if tuple(int(s) for s in array.shape) != tuple(grid.shape):
            raise SubmissionError(f"array shape {tuple(array.shape)} != grid shape {grid.shape}")
        self.array, self.grid, self.target = array, grid, target
        self.shape = tuple(target.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        maps = []
        for ax, k in enumerate(key):
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise SubmissionError("OnGrid supports plain slices only")
            start, stop, _ = k.indices(self.shape[ax])
            maps.append(_axis_map(self.grid, self.target, ax, start, max(start, stop)))
        out = np.zeros(tuple(m.size for m in maps), dtype=self.dtype)
        valid = [m >= 0 for m in maps]
        if not all(v.any() for v in valid):
            return out
        lo = [int(m[v].min()) for m, v in zip(maps, valid)]
        hi = [int(m[v].max()) + 1 for m, v in zip(maps, valid)]
        src = np.asarray(self.array[tuple(slice(a, b) for a, b in zip(lo, hi))])
        sel = [m[v] - a for m, v, a in zip(maps, valid, lo)]
        dst = [np.flatnonzero(v) for v in valid]
        out[np.ix_(*dst)] = src[np.ix_(*sel)]
        return out


def _label_attrs(grid: Grid) -> Dict[str, Any]:
    return {"voxel_size": list(grid.voxel_size_nm), "translation": list(grid.translation_nm),
            "shape": list(grid.shape)}


def _create_empty(group, name: str, shape, dtype, chunks):
    import numcodecs

    comp = numcodecs.Zstd(level=5)
    if _zarr.ZARR_MAJOR >= 3:
        return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=comp,
                                  fill_value=0, overwrite=True,
                                  chunk_key_encoding={"name": "v2", "separator": "/"})
    return group.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, compressor=comp,
                                fill_value=0, overwrite=True, dimension_separator="/")


class LabelWriter:
    """Write one class of one crop slab by slab, atomically.

    >>> with LabelWriter("submission.zarr", 7, "mito", grid, np.uint16) as w:
    ...     w.write(z0, slab)          # slab (dz, y, x) at z index z0
    The array is built under a hidden temporary name in ``root/crop<ID>`` and renamed to
    ``<class>`` when the block ends without error (an older array of that name is replaced).
    """

    def __init__(self, root, crop, class_name: str, grid: Grid, dtype, chunks=None):
        self.root = str(root)
        self.crop = crop_name(crop)
        self.class_name = class_name
        self.grid = grid
        self.dtype = np.dtype(dtype)
        self.chunks = tuple(chunks) if chunks else tuple(min(64, max(1, s)) for s in grid.shape)
        self.crop_path = os.path.join(_zarr.local_path(self.root), self.crop)
        self.final = os.path.join(self.crop_path, class_name)
        self.tmp = os.path.join(self.crop_path, f".{class_name}.tmp-{os.getpid()}")
        self.array = None

    def __enter__(self) -> "LabelWriter":
        _zarr.create_group(self.root)
        group = _zarr.create_group(self.crop_path)
        if os.path.exists(self.tmp):
            shutil.rmtree(self.tmp)
        self.array = _create_empty(group, os.path.basename(self.tmp), tuple(self.grid.shape),
                                   self.dtype, self.chunks)
        self.array.attrs.update(_label_attrs(self.grid))
        return self

    def write(self, z0: int, slab: np.ndarray) -> None:
        """Write ``slab`` (dz, y, x) at z index ``z0`` (cast to the array's dtype)."""
        self.array[z0:z0 + slab.shape[0]] = np.asarray(slab).astype(self.dtype, copy=False)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if os.path.exists(self.final):
            old = os.path.join(self.crop_path, f".{self.class_name}.old-{os.getpid()}")
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_label(root, crop, class_name: str, data: np.ndarray, grid: Grid, dtype=None,
                chunks=None) -> str:
    """Write one (z, y, x) array as ``root/crop<ID>/<class>`` on ``grid`` (zarr v2, attributes
    ``voxel_size``, ``translation``, ``shape``), atomically; returns its path. ``dtype`` default:
    uint8 for boolean data, else the smallest unsigned type holding the maximum."""
    data = np.asarray(data)
    if tuple(data.shape) != tuple(grid.shape):
        raise SubmissionError(f"{crop_name(crop)}/{class_name}: data shape {data.shape} != grid "
                              f"shape {grid.shape}")
    if dtype is None:
        if data.dtype == bool or data.size == 0:
            dtype = np.uint8
        else:
            if data.dtype.kind == "i" and data.min() < 0:
                raise SubmissionError(f"{crop_name(crop)}/{class_name}: negative label values")
            dtype = label_dtype(int(data.max()))
    with LabelWriter(root, crop, class_name, grid, dtype, chunks) as w:
        w.write(0, data)
    return w.final


def zip_submission(root, zip_path=None) -> Path:
    """Zip the hierarchy ``root`` (contents at the zip's top level) into ``zip_path`` (default
    ``root`` with ``.zip`` instead of ``.zarr``), atomically; returns the zip's path."""
    src = Path(_zarr.local_path(str(root)))
    if not (src / ".zgroup").exists():
        raise SubmissionError(f"{src}: not a zarr v2 group (no .zgroup); write the submission first")
    dst = Path(zip_path) if zip_path is not None else src.with_suffix(".zip")
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                full = os.path.join(dirpath, f)
                zf.write(full, os.path.relpath(full, src))
    os.replace(tmp, dst)
    return dst
