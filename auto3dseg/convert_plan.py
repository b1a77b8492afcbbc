"""Conversion plan of one crop: source grids, raw level, output grid, class sources, z slabs and the provenance hash.

Geometry (all grids (z, y, x) in nm, translation = centre of voxel 0):
  * the crop's label grid is the s0 grid shared by its class arrays;
  * the output grid covers the same world box at ``target_spacing``: same low corner,
    ``round(extent / spacing)`` voxels per axis (at least 1);
  * the raw level is ``--scale sN`` or, with ``auto``, chosen by physical voxel size
    (``cellmap.multiscale.choose_level``, rule ``not_coarser``: the coarsest level still at least
    as fine as the target on every axis, so EM is only ever area-downsampled or kept);
  * the crop is cut into z slabs of bounded size, converted independently (possibly by
    different processes) and streamed into the NIfTI files in z order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from cellmap import _zarr
from cellmap.grid import Grid
from cellmap.multiscale import ScaleLevel, choose_level, read_multiscale
from cellmap.resample import em_taps, output_shape, window_of


__all__ = ["CONVERTER_VERSION", "ClassSource", "CropPlan", "plan_crop", "slab_ranges", "grid_dict",
           "DEFAULT_SLAB_VOXELS"]

CONVERTER_VERSION = "2"
#: Budget of source or output voxels handled by one slab task (bounds peak memory per worker).
DEFAULT_SLAB_VOXELS = 1024 * 1024


@dataclass(frozen=True)
class ClassSource:
    """Where one class of the chosen set comes from in one crop.

    ``status``: "annotated" (data present), "absent" (annotated, no voxel), "unknown" (not
    annotated in this crop). ``arrays``: label array locations (s0) whose union of ``> 0`` is the
    class mask (one array, or the atoms of a derived group); ``unknown_values``: per array, the
    value meaning "unknown voxel" (255 when the encoding declares it and
    ``complement_counts.unknown > 0``, else None: 255 is then an ordinary id);
    ``grid``: the arrays' s0 grid.
    """

    name: str
    status: str
    arrays: Tuple[str, ...] = ()
    unknown_values: Tuple[Optional[int], ...] = ()
    grid: Optional[Grid] = None
    derived_from: Tuple[str, ...] = ()


@dataclass(frozen=True)
class CropPlan:
    """Everything a worker needs to convert one crop (picklable)."""

    key: str                   # "<dataset>_<crop>", the file stem
    dataset: str
    crop: str                  # "crop7"
    usage: str                 # "train" | "validate" | "test"
    raw_group: str             # raw multiscale group location
    raw_level: ScaleLevel
    label_grid: Grid           # the crop's s0 label grid
    out_grid: Grid
    classes: Tuple[ClassSource, ...]
    has_labels: bool
    slabs: Tuple[Tuple[int, int], ...]
    source_meta: Dict = field(default_factory=dict, compare=False)

    @property
    def raw_array(self) -> str:
        return _zarr.join(self.raw_group, self.raw_level.path)

    @property
    def annotated(self) -> List[str]:
        """Names of the classes annotated in this crop (present or absent), set order."""
        return [c.name for c in self.classes if c.status in ("annotated", "absent")]


def grid_dict(g: Grid) -> dict:
    """JSON form of a grid: (z, y, x) voxel size, voxel-0 centre and shape; units nm."""
    return {"axes": "zyx", "unit": "nm", "voxel_size_nm": [float(v) for v in g.voxel_size_nm],
            "translation_nm": [float(t) for t in g.translation_nm], "shape": [int(s) for s in g.shape]}


def output_grid(label_grid: Grid, spacing_nm: Sequence[float]) -> Grid:
    """The output grid: the label grid's box at ``spacing_nm`` (same low corner, rounded shape)."""
    return Grid.from_corner(tuple(float(s) for s in spacing_nm), label_grid.corner_nm,
                            output_shape(label_grid.extent_nm, spacing_nm))


def pick_raw_level(raw_group: str, scale: str, spacing_nm: Sequence[float]) -> ScaleLevel:
    """The raw level to read: ``scale`` "auto" (by physical voxel size) or a level path such as "s1"."""
    ms = read_multiscale(raw_group)
    if str(scale) == "auto":
        return choose_level(ms, tuple(spacing_nm), rule="not_coarser")
    return ms.level(str(scale))


def slab_ranges(out: Grid, src_voxels_per_out_row: int,
                budget_voxels: int = DEFAULT_SLAB_VOXELS) -> Tuple[Tuple[int, int], ...]:
    """Split the output z rows into slabs [z0, z1) whose output voxels and source voxels read
    (``src_voxels_per_out_row`` per output row) stay under ``budget_voxels`` (at least one row)."""
    nz = out.shape[0]
    out_row = out.shape[1] * out.shape[2]
    per_row = max(out_row, int(src_voxels_per_out_row), 1)
    rows = max(1, int(budget_voxels // per_row))
    return tuple((z, min(z + rows, nz)) for z in range(0, nz, rows))


def _meta_text(array_location: str) -> Dict:
    """Source metadata hashed for provenance: the array's .zarray and .zattrs (local) or shape/chunks."""
    try:
        meta = _zarr.array_meta(array_location)
        meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in meta.items()}
        attrs = _zarr.read_attrs(array_location) if not _zarr.is_remote(array_location) else {}
        return {"meta": meta, "attrs": attrs}
    except Exception as exc:  # reported, and it changes the hash
        return {"error": str(exc)}


def plan_crop(key: str, dataset: str, crop: str, usage: str, raw_group: str, classes: Sequence[ClassSource],
              label_grid: Grid, spacing_nm: Sequence[float], scale: str,
              budget_voxels: int = DEFAULT_SLAB_VOXELS) -> CropPlan:
    """Build the plan of one crop from its raw group, class sources and label grid."""
    level = pick_raw_level(raw_group, scale, spacing_nm)
    out = output_grid(label_grid, spacing_nm)
    # source rows per output row and source row size, for raw and for the label grid
    et = em_taps(level.grid, out)
    raw_rows = max(1.0, out.voxel_size_nm[0] / level.grid.voxel_size_nm[0])
    ry, rx = window_of(et[1]), window_of(et[2])
    raw_row = (ry[1] - ry[0]) * (rx[1] - rx[0])
    lab_rows = max(1.0, out.voxel_size_nm[0] / label_grid.voxel_size_nm[0])
    lab_row = label_grid.shape[1] * label_grid.shape[2]
    per_out = max(raw_rows * raw_row, lab_rows * lab_row)
    slabs = slab_ranges(out, int(per_out), budget_voxels)
    has_labels = usage != "test"
    plan = CropPlan(key=key, dataset=dataset, crop=crop, usage=usage, raw_group=raw_group, raw_level=level,
                    label_grid=label_grid, out_grid=out, classes=tuple(classes), has_labels=has_labels,
                    slabs=slabs)
    return plan


def plan_hash(plan: CropPlan, params: Dict, missing_chunks: int) -> str:
    """SHA-256 of the conversion parameters and the source metadata of one crop.

    Covers the converter version, output grid, raw level grid and metadata, every class
    source (status, arrays, their metadata) and the number of missing raw chunks (so a rerun
    after ``csc fetch-data`` reconverts the crop).
    """
    src = {
        "version": CONVERTER_VERSION,
        "params": params,
        "out_grid": grid_dict(plan.out_grid),
        "label_grid": grid_dict(plan.label_grid),
        "raw": {"array": plan.raw_array, "grid": grid_dict(plan.raw_level.grid), **_meta_text(plan.raw_array)},
        "classes": [{"name": c.name, "status": c.status, "arrays": list(c.arrays), "unknown_values": list(c.unknown_values),
                     "meta": [_meta_text(a) for a in c.arrays]} for c in plan.classes],
        "usage_has_labels": plan.has_labels,
        "missing_chunks": int(missing_chunks),
    }
    blob = json.dumps(src, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
