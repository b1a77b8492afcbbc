"""World-coordinate voxel grids and boxes in nanometres, axis order (z, y, x).

Conventions (OME-NGFF 0.4, the CellMap convention):

* ``translation_nm`` is the world position of the **centre** of voxel 0.
* Voxel ``i`` covers the half-open world interval
  ``[corner_nm + i * voxel_size_nm, corner_nm + (i + 1) * voxel_size_nm)`` with
  ``corner_nm = translation_nm - voxel_size_nm / 2``.
* Two grids are aligned by their **corners**, never by their translations or by the name
  of a scale level. A fractional index that is not within ``tol_vox`` of an integer is a
  misfit and raises :class:`GridMismatchError` (never a silent rounding).

Every tuple is (z, y, x); lengths are in nm, indices in voxels of the grid named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from cellmap.errors import CellMapError

__all__ = ["ALIGN_TOL_VOX", "Box", "Grid", "GridMismatchError", "snap_index"]

#: Default tolerance (in voxels of the grid indices are expressed in) for "this fractional
#: index is an integer". Float noise in real metadata (e.g. 8429.85 / 2.62) is ~1e-12;
#: values rounded to 0.01 nm in metadata are < 5e-3 voxel off. A quarter or half voxel
#: misfit is far outside and raises.
ALIGN_TOL_VOX = 1e-2

Vec = Tuple[float, ...]
IVec = Tuple[int, ...]


class GridMismatchError(CellMapError):
    """Two grids or a grid and a box do not line up on whole voxels (or have other sizes)."""


def _fvec(values, name: str) -> Vec:
    try:
        out = tuple(float(v) for v in values)
    except TypeError as exc:  # a scalar or None
        raise CellMapError(f"{name} must be a sequence of numbers (z, y, x), got {values!r}") from exc
    if not all(math.isfinite(v) for v in out):
        raise CellMapError(f"{name} must be finite numbers, got {values!r}")
    return out


def snap_index(value: float, tol_vox: float = ALIGN_TOL_VOX, what: str = "index") -> int:
    """Round a fractional voxel index to the nearest integer, or raise if it is further than
    ``tol_vox`` from it (e.g. a half-voxel misfit)."""
    r = round(value)
    if abs(value - r) > tol_vox:
        raise GridMismatchError(
            f"{what} is {value:.6g} voxels, not a whole number (tolerance {tol_vox:g} voxel): the grids "
            "are offset by a fraction of a voxel. Resample onto the target grid instead of slicing, or "
            "check the translations (centre of voxel 0) of both grids."
        )
    return int(r)


@dataclass(frozen=True)
class Box:
    """An axis-aligned world box ``[start_nm, stop_nm)`` in nm, (z, y, x)."""

    start_nm: Vec
    stop_nm: Vec

    def __post_init__(self):
        start = _fvec(self.start_nm, "Box.start_nm")
        stop = _fvec(self.stop_nm, "Box.stop_nm")
        if len(start) != len(stop):
            raise CellMapError(f"Box start {start} and stop {stop} have different lengths")
        object.__setattr__(self, "start_nm", start)
        object.__setattr__(self, "stop_nm", stop)

    @property
    def ndim(self) -> int:
        return len(self.start_nm)

    @property
    def size_nm(self) -> Vec:
        """Edge lengths in nm (0 for an empty axis)."""
        return tuple(max(0.0, b - a) for a, b in zip(self.start_nm, self.stop_nm))

    @property
    def volume_nm3(self) -> float:
        return float(np.prod(self.size_nm))

    @property
    def is_empty(self) -> bool:
        return any(b <= a for a, b in zip(self.start_nm, self.stop_nm))

    def intersect(self, other: "Box") -> "Box":
        """The common part of two boxes (possibly empty: check :attr:`is_empty`)."""
        start = tuple(max(a, b) for a, b in zip(self.start_nm, other.start_nm))
        stop = tuple(min(a, b) for a, b in zip(self.stop_nm, other.stop_nm))
        stop = tuple(max(s, e) for s, e in zip(start, stop))
        return Box(start, stop)

    def contains(self, other: "Box", tol_nm: float = 1e-6) -> bool:
        """True when ``other`` lies inside this box (within ``tol_nm``)."""
        return all(a - tol_nm <= c and d <= b + tol_nm
                   for a, b, c, d in zip(self.start_nm, self.stop_nm, other.start_nm, other.stop_nm))

    def grow(self, margin_nm) -> "Box":
        """This box grown by ``margin_nm`` (scalar or (z, y, x)) on every side."""
        m = np.broadcast_to(np.asarray(margin_nm, dtype=float), (self.ndim,))
        return Box(tuple(np.subtract(self.start_nm, m)), tuple(np.add(self.stop_nm, m)))


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in world nm, (z, y, x).

    ``voxel_size_nm``: edge lengths of a voxel; ``translation_nm``: world position of the
    centre of voxel 0; ``shape``: number of voxels. All three are (z, y, x) tuples.
    """

    voxel_size_nm: Vec
    translation_nm: Vec
    shape: IVec

    def __post_init__(self):
        vs = _fvec(self.voxel_size_nm, "voxel_size_nm")
        tr = _fvec(self.translation_nm, "translation_nm")
        try:
            shape = tuple(int(s) for s in self.shape)
        except TypeError as exc:
            raise CellMapError(f"shape must be a sequence of ints (z, y, x), got {self.shape!r}") from exc
        if not (len(vs) == len(tr) == len(shape)):
            raise CellMapError(
                f"Grid needs voxel_size_nm, translation_nm and shape of one length; got {vs}, {tr}, {shape}")
        if any(v <= 0 for v in vs):
            raise CellMapError(f"voxel sizes must be > 0 nm, got {vs}")
        if any(s < 0 for s in shape):
            raise CellMapError(f"shape must be >= 0, got {shape}")
        object.__setattr__(self, "voxel_size_nm", vs)
        object.__setattr__(self, "translation_nm", tr)
        object.__setattr__(self, "shape", shape)

    # ------------------------------------------------------------------ derived geometry
    @classmethod
    def from_corner(cls, voxel_size_nm, corner_nm, shape) -> "Grid":
        """A grid whose voxel 0 has its low corner at ``corner_nm``."""
        vs = _fvec(voxel_size_nm, "voxel_size_nm")
        c = _fvec(corner_nm, "corner_nm")
        return cls(vs, tuple(a + v / 2.0 for a, v in zip(c, vs)), shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of voxels."""
        return int(np.prod(self.shape))

    @property
    def corner_nm(self) -> Vec:
        """Low corner of voxel 0 = translation - voxel_size / 2 (nm, z/y/x)."""
        return tuple(t - v / 2.0 for t, v in zip(self.translation_nm, self.voxel_size_nm))

    @property
    def extent_nm(self) -> Vec:
        """Edge lengths of the whole grid = shape * voxel_size (nm, z/y/x)."""
        return tuple(s * v for s, v in zip(self.shape, self.voxel_size_nm))

    @property
    def end_nm(self) -> Vec:
        """High corner of the last voxel = corner + extent (nm, z/y/x); exclusive bound."""
        return tuple(c + e for c, e in zip(self.corner_nm, self.extent_nm))

    @property
    def box(self) -> Box:
        """The world box covered by the voxels, corner to corner."""
        return Box(self.corner_nm, self.end_nm)

    def world_of(self, index) -> np.ndarray:
        """World position (nm) of voxel centres; ``index`` is (..., ndim), may be fractional.

        ``world = translation + index * voxel_size``.
        """
        idx = np.asarray(index, dtype=float)
        return np.asarray(self.translation_nm) + idx * np.asarray(self.voxel_size_nm)

    def index_of(self, world_nm) -> np.ndarray:
        """Fractional voxel index of world points (nm), (..., ndim); voxel centres give integers.

        ``index = (world - translation) / voxel_size``; the voxel containing a point is
        ``floor(index + 0.5)``.
        """
        w = np.asarray(world_nm, dtype=float)
        return (w - np.asarray(self.translation_nm)) / np.asarray(self.voxel_size_nm)

    def axis_centres_nm(self, axis: int) -> np.ndarray:
        """World positions (nm) of the voxel centres along one axis (0 = z, 1 = y, 2 = x)."""
        return self.translation_nm[axis] + np.arange(self.shape[axis]) * self.voxel_size_nm[axis]

    # ------------------------------------------------------------------ relations between grids
    def same_voxel_size(self, other: "Grid", rel_tol: float = 1e-6) -> bool:
        return all(math.isclose(a, b, rel_tol=rel_tol) for a, b in zip(self.voxel_size_nm, other.voxel_size_nm))

    def scale_to(self, other: "Grid") -> Vec:
        """Per-axis ratio ``self.voxel_size / other.voxel_size`` (2.0 = self is 2x coarser)."""
        return tuple(a / b for a, b in zip(self.voxel_size_nm, other.voxel_size_nm))

    def corner_index_in(self, other: "Grid") -> np.ndarray:
        """Fractional index, in ``other``'s voxels, of this grid's low corner relative to
        ``other``'s low corner: ``(self.corner - other.corner) / other.voxel_size``."""
        return (np.asarray(self.corner_nm) - np.asarray(other.corner_nm)) / np.asarray(other.voxel_size_nm)

    def offset_in(self, other: "Grid", tol_vox: float = ALIGN_TOL_VOX) -> IVec:
        """Integer index, in ``other``'s voxels, at which this grid's voxel-0 corner lies.

        Works for any voxel sizes (corners are compared, not translations). Raises
        :class:`GridMismatchError` when the corner falls more than ``tol_vox`` of an
        ``other`` voxel away from a voxel corner (e.g. a half-voxel misfit). The index can be
        negative or beyond ``other.shape`` (the grids need not overlap).
        """
        frac = self.corner_index_in(other)
        return tuple(snap_index(f, tol_vox, what=f"offset of grid corner on axis {'zyx'[i] if self.ndim == 3 else i}")
                     for i, f in enumerate(frac))

    def window_of_box(self, box: Box, snap: str = "exact", tol_vox: float = ALIGN_TOL_VOX) -> Tuple[IVec, IVec]:
        """Index window ``(start, stop)`` of this grid's voxels covering a world box.

        ``snap="exact"``: the box corners must land on voxel corners (within ``tol_vox``),
        else :class:`GridMismatchError`. ``"outward"``: the smallest window of whole voxels
        containing the box. ``"inward"``: the largest window inside the box. The window is
        not clipped to ``shape`` (it may start below 0 or end past ``shape``).
        """
        lo = (np.asarray(box.start_nm) - np.asarray(self.corner_nm)) / np.asarray(self.voxel_size_nm)
        hi = (np.asarray(box.stop_nm) - np.asarray(self.corner_nm)) / np.asarray(self.voxel_size_nm)
        if snap == "exact":
            start = tuple(snap_index(v, tol_vox, "box start") for v in lo)
            stop = tuple(snap_index(v, tol_vox, "box stop") for v in hi)
        elif snap == "outward":
            start = tuple(int(math.floor(v + tol_vox)) for v in lo)
            stop = tuple(int(math.ceil(v - tol_vox)) for v in hi)
        elif snap == "inward":
            start = tuple(int(math.ceil(v - tol_vox)) for v in lo)
            stop = tuple(int(math.floor(v + tol_vox)) for v in hi)
        else:
            raise CellMapError(f"snap must be 'exact', 'outward' or 'inward', got {snap!r}")
        return start, stop

    def sub_grid(self, start: Sequence[int], stop: Sequence[int]) -> "Grid":
        """The grid of the index window ``[start, stop)`` (same voxel size; may extend
        outside this grid)."""
        start = tuple(int(s) for s in start)
        stop = tuple(int(s) for s in stop)
        shape = tuple(max(0, b - a) for a, b in zip(start, stop))
        return Grid(self.voxel_size_nm, tuple(self.world_of(start)), shape)

    def resampled(self, voxel_size_nm, rounding: str = "exact", tol_vox: float = ALIGN_TOL_VOX) -> "Grid":
        """The grid at another voxel size covering the same box (same low corner).

        ``shape = extent / voxel_size``: with ``rounding="exact"`` it must be whole (within
        ``tol_vox``), else :class:`GridMismatchError`; ``"floor"``, ``"ceil"`` or
        ``"nearest"`` accept a partial last voxel (the box then shrinks or grows at the high
        end). Example: a (200, 1000, 1000) grid at (2.62, 2, 2) nm resampled to
        (5.24, 4, 4) is (100, 500, 500) with translation shifted by +half the old voxel.
        """
        vs = _fvec(voxel_size_nm, "voxel_size_nm")
        if len(vs) != self.ndim:
            raise CellMapError(f"voxel_size_nm {vs} has {len(vs)} axes, the grid has {self.ndim}")
        ratio = [e / v for e, v in zip(self.extent_nm, vs)]
        if rounding == "exact":
            shape = tuple(snap_index(r, tol_vox, f"resampled shape ({self.extent_nm} nm / {vs} nm)") for r in ratio)
        elif rounding in ("floor", "ceil", "nearest"):
            f = {"floor": lambda r: math.floor(r + tol_vox), "ceil": lambda r: math.ceil(r - tol_vox),
                 "nearest": lambda r: int(round(r))}[rounding]
            shape = tuple(int(f(r)) for r in ratio)
        else:
            raise CellMapError(f"rounding must be 'exact', 'floor', 'ceil' or 'nearest', got {rounding!r}")
        return Grid.from_corner(vs, self.corner_nm, shape)

    def intersection(self, other: "Grid") -> Box:
        """The world box common to both grids (possibly empty)."""
        return self.box.intersect(other.box)

    def describe(self) -> str:
        """Short human-readable form for messages: ``vs [..] nm, translation [..] nm, shape [..]``."""
        return (f"voxel size {list(self.voxel_size_nm)} nm, translation {list(self.translation_nm)} nm, "
                f"shape {list(self.shape)}")
