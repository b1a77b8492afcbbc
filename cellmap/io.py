"""Read world boxes from zarr pyramid levels chunk by chunk, with clip + pad and missing-chunk checks.

All windows and boxes are (z, y, x). A box is given in world nm (:class:`cellmap.grid.Box`)
and mapped onto the level's voxels by corners (see :mod:`cellmap.grid`); the part of the box
outside the array is filled with ``fill_value`` and flagged in the returned ``outside`` mask.

A chunk file that was never downloaded (a partial ``csc fetch-data``) reads back as the
array's ``fill_value`` without any error; :func:`missing_mask` / :func:`missing_fraction`
detect that on local stores by checking which chunk files exist.

Typical use::

    ms = read_multiscale(raw_group)
    level = ms["s0"]
    data, outside = read_box(ms, level, label_grid.box)       # uint8 (z, y, x), bool (z, y, x)
    frac = missing_fraction(ms, level, label_grid.box)       # 0.0 .. 1.0 of the voxels inside raw
"""

from __future__ import annotations

import itertools
import os
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from cellmap import _zarr
from cellmap.errors import CellMapError
from cellmap.grid import ALIGN_TOL_VOX, Box, Grid, GridMismatchError
from cellmap.multiscale import Multiscale, ScaleLevel

__all__ = ["open_level", "read_window", "read_box", "read_grid", "window_chunks", "missing_chunks",
           "missing_mask", "missing_fraction", "MissingChunkCheckError"]

IVec = Tuple[int, ...]


class MissingChunkCheckError(CellMapError):
    """Chunk existence cannot be checked (e.g. a remote store)."""


def _level(multiscale: Multiscale, level: Union[ScaleLevel, str]) -> ScaleLevel:
    return multiscale.level(level) if isinstance(level, str) else level


def open_level(multiscale: Multiscale, level: Union[ScaleLevel, str]):
    """The zarr array of one level (read-only)."""
    return _zarr.open_array(multiscale.array_location(_level(multiscale, level)))


def _clip(start: IVec, stop: IVec, shape: IVec):
    lo = tuple(min(max(a, 0), s) for a, s in zip(start, shape))
    hi = tuple(min(max(b, 0), s) for b, s in zip(stop, shape))
    hi = tuple(max(h, l) for l, h in zip(lo, hi))
    return lo, hi


def window_chunks(start: Sequence[int], stop: Sequence[int], chunks: Sequence[int],
                  shape: Sequence[int]) -> Iterator[Tuple[IVec, Tuple[slice, ...]]]:
    """Chunk grid indices overlapping the index window ``[start, stop)`` clipped to ``shape``,
    each with the array slices of its overlap with the window."""
    lo, hi = _clip(tuple(start), tuple(stop), tuple(shape))
    if any(h <= l for l, h in zip(lo, hi)):
        return
    ranges = [range(l // c, (h - 1) // c + 1) for l, h, c in zip(lo, hi, chunks)]
    for idx in itertools.product(*ranges):
        sl = tuple(slice(max(l, i * c), min(h, (i + 1) * c)) for i, l, h, c in zip(idx, lo, hi, chunks))
        yield idx, sl


def read_window(array, start: Sequence[int], stop: Sequence[int], fill_value=0) -> Tuple[np.ndarray, np.ndarray]:
    """Read the index window ``[start, stop)`` of a zarr array chunk by chunk.

    The window may reach outside the array (negative start, stop past ``shape``): that part
    is filled with ``fill_value``. Returns ``(data, outside)`` with ``data`` of the array's
    dtype and shape ``stop - start``, and ``outside`` a bool array, True where the voxel lies
    outside the array.
    """
    start = tuple(int(s) for s in start)
    stop = tuple(int(s) for s in stop)
    shape_out = tuple(max(0, b - a) for a, b in zip(start, stop))
    data = np.full(shape_out, fill_value, dtype=array.dtype)
    outside = np.ones(shape_out, dtype=bool)
    chunks = tuple(array.chunks)
    for _, sl in window_chunks(start, stop, chunks, tuple(array.shape)):
        dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, start))
        data[dst] = array[sl]
        outside[dst] = False
    return data, outside


def read_box(multiscale: Multiscale, level: Union[ScaleLevel, str], box: Box, fill_value=0,
             snap: str = "exact", tol_vox: float = ALIGN_TOL_VOX) -> Tuple[np.ndarray, np.ndarray]:
    """Read the voxels of ``level`` covering a world ``box`` (nm), clipped and padded.

    ``snap="exact"`` requires the box corners on the level's voxel corners (else
    :class:`cellmap.grid.GridMismatchError`); ``"outward"`` reads the smallest covering window.
    The returned data lies on ``level.grid.sub_grid(*level.grid.window_of_box(box, snap))``.
    Returns ``(data, outside)`` as :func:`read_window`.
    """
    lv = _level(multiscale, level)
    start, stop = lv.grid.window_of_box(box, snap=snap, tol_vox=tol_vox)
    return read_window(open_level(multiscale, lv), start, stop, fill_value=fill_value)


def read_grid(multiscale: Multiscale, level: Union[ScaleLevel, str], grid: Grid, fill_value=0,
              tol_vox: float = ALIGN_TOL_VOX) -> Tuple[np.ndarray, np.ndarray]:
    """Read ``level`` onto a target ``grid`` with the same voxel size and a whole-voxel offset.

    Raises :class:`cellmap.grid.GridMismatchError` if the voxel sizes differ or the grids are
    offset by a fraction of a voxel (resample instead). Returns ``(data, outside)`` of shape
    ``grid.shape``.
    """
    lv = _level(multiscale, level)
    if not grid.same_voxel_size(lv.grid):
        raise GridMismatchError(
            f"{multiscale.array_location(lv)}: level voxel size {list(lv.voxel_size_nm)} nm differs from the "
            f"target grid's {list(grid.voxel_size_nm)} nm; read a box and resample it.")
    start = grid.offset_in(lv.grid, tol_vox=tol_vox)
    stop = tuple(a + s for a, s in zip(start, grid.shape))
    return read_window(open_level(multiscale, lv), start, stop, fill_value=fill_value)


# ------------------------------------------------------------------------------ missing chunks
def _chunk_file(array_dir: str, idx: IVec, separator: str) -> str:
    if separator == "/":
        return os.path.join(array_dir, *(str(i) for i in idx))
    return os.path.join(array_dir, separator.join(str(i) for i in idx))


def missing_chunks(array_location: str, start: Sequence[int], stop: Sequence[int]) -> Tuple[IVec, ...]:
    """Chunk indices overlapping the index window ``[start, stop)`` (clipped to the array)
    whose chunk file does not exist in a **local** zarr v2 array."""
    if _zarr.is_remote(array_location):
        raise MissingChunkCheckError(
            f"{array_location}: missing-chunk detection needs a local store; remote stores are complete. "
            "Download with `csc fetch-data` and point at the local copy to check it.")
    meta = _zarr.array_meta(array_location)
    base = _zarr.local_path(array_location)
    return tuple(idx for idx, _ in window_chunks(start, stop, meta["chunks"], meta["shape"])
                 if not os.path.exists(_chunk_file(base, idx, meta["dimension_separator"])))


def missing_mask(multiscale: Multiscale, level: Union[ScaleLevel, str], box: Box, snap: str = "exact",
                 tol_vox: float = ALIGN_TOL_VOX) -> np.ndarray:
    """Bool (z, y, x) mask over the window of ``box`` on ``level`` (as :func:`read_box`): True
    where the voxel is inside the array but its chunk file is absent from the local store
    (it would read back as fill value). Voxels outside the array are False (see ``outside``)."""
    lv = _level(multiscale, level)
    start, stop = lv.grid.window_of_box(box, snap=snap, tol_vox=tol_vox)
    loc = multiscale.array_location(lv)
    meta = _zarr.array_meta(loc)
    shape_out = tuple(max(0, b - a) for a, b in zip(start, stop))
    mask = np.zeros(shape_out, dtype=bool)
    missing = set(missing_chunks(loc, start, stop))
    if not missing:
        return mask
    for idx, sl in window_chunks(start, stop, meta["chunks"], meta["shape"]):
        if idx in missing:
            mask[tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, start))] = True
    return mask


def missing_fraction(multiscale: Multiscale, level: Union[ScaleLevel, str], box: Box, snap: str = "exact",
                     tol_vox: float = ALIGN_TOL_VOX) -> Optional[float]:
    """Fraction (0..1) of the box's voxels **inside the array** whose chunk files are missing
    from the local store; ``None`` when the box does not overlap the array at all."""
    lv = _level(multiscale, level)
    start, stop = lv.grid.window_of_box(box, snap=snap, tol_vox=tol_vox)
    lo, hi = _clip(start, stop, lv.grid.shape)
    inside = int(np.prod([h - l for l, h in zip(lo, hi)]))
    if inside == 0:
        return None
    return float(missing_mask(multiscale, lv, box, snap=snap, tol_vox=tol_vox).sum()) / inside
