"""Separable resampling between world grids: area/linear for EM, class-preserving max-pooling for labels.

All arrays are (z, y, x); all positions and sizes are in nm. A grid here is anything with
``voxel_size_nm``, ``translation_nm`` (centre of voxel 0) and ``shape``, each a (z, y, x) tuple
(``cellmap.grid.Grid``). Every function is pure numpy and works on windows (slabs): taps are
computed once per axis against the whole source axis, then :func:`window_of` /
:func:`shift_taps` restrict them to the source window that was actually read.

EM rule (per axis, separable):
  * output voxel larger than the source voxel (downsampling): **area** average, each source
    voxel weighted by the length of its overlap with the output voxel;
  * otherwise (upsampling or equal size): **linear** interpolation at the output voxel centre.
  Both are exact on fields linear in world position (away from the clamped border). Source
  indices outside the source axis are clamped to its edge (edge replicate); callers mark output
  voxels whose centre lies outside raw themselves (see :func:`outside_axis`).

Label rule ("any presence, then precedence"), per output voxel:
  * the contributing source voxels are those whose *centre* lies inside the output voxel box
    (a partition of the source for downsampling); when there is none (upsampling), the single
    source voxel containing the output voxel centre; when that is outside the source too, the
    voxel gets the ``outside`` rank;
  * labels are handled as **ranks**: 0 = background, 1 = ignore, 2.. = classes, a higher rank
    meaning a higher precedence; the output rank is the **maximum** rank over the contributing
    voxels. Hence a class present in any contributing voxel survives (a 1-voxel membrane at 2 nm
    is not lost at 8 nm); where several classes compete the one of highest precedence wins;
    background is claimed only when every contributing voxel is known background, and a voxel
    mixing background and ignore becomes ignore.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from cellmap.errors import CellMapError

__all__ = [
    "AxisTaps",
    "ResampleError",
    "em_axis_taps",
    "label_axis_taps",
    "em_taps",
    "label_taps",
    "window_of",
    "shift_taps",
    "subset_taps",
    "resample_em",
    "max_pool_taps",
    "outside_axis",
    "BACKGROUND_RANK",
    "IGNORE_RANK",
]

BACKGROUND_RANK = 0
IGNORE_RANK = 1
_EPS = 1e-6


class ResampleError(CellMapError):
    """Grids that cannot be resampled onto each other (empty output, non-positive voxel size)."""


@dataclass(frozen=True)
class AxisTaps:
    """Source taps for every output index of one axis.

    ``index``: int64 (n_out, K) source indices (padded with a repeat of the first tap, weight 0);
    ``weight``: float64 (n_out, K) weights summing to 1 per row (all 1 for label taps).
    ``index`` may hold -1 for label taps meaning "no source voxel" (outside the source).
    """

    index: np.ndarray
    weight: np.ndarray

    @property
    def n_out(self) -> int:
        return int(self.index.shape[0])

    def is_identity_slice(self) -> bool:
        """True when the taps are a plain contiguous slice of the source (no arithmetic needed)."""
        if self.index.shape[1] != 1 or np.any(self.index[:, 0] < 0):
            return False
        col = self.index[:, 0]
        return bool(np.all(self.weight[:, 0] == 1.0) and np.all(np.diff(col) == 1))


def _corner(translation_nm: float, voxel_nm: float) -> float:
    return float(translation_nm) - float(voxel_nm) / 2.0


def _check(voxel_nm: float, n: int, what: str) -> None:
    if not voxel_nm > 0:
        raise ResampleError(f"{what}: voxel size must be > 0 nm, got {voxel_nm}")
    if n < 1:
        raise ResampleError(f"{what}: axis length must be >= 1, got {n}")


def em_axis_taps(src_corner_nm: float, src_voxel_nm: float, src_n: int,
                 out_corner_nm: float, out_voxel_nm: float, out_n: int) -> AxisTaps:
    """EM taps of one axis: area weights when ``out_voxel_nm > src_voxel_nm``, else linear.

    Corners are the low edges of voxel 0 in nm. Source indices are clamped to [0, src_n - 1].
    """
    _check(src_voxel_nm, src_n, "source axis")
    _check(out_voxel_nm, out_n, "output axis")
    ratio = out_voxel_nm / src_voxel_nm
    i = np.arange(out_n, dtype=np.float64)
    if ratio > 1.0 + _EPS:
        lo = (out_corner_nm + i * out_voxel_nm - src_corner_nm) / src_voxel_nm
        hi = lo + ratio
        first = np.floor(lo + _EPS).astype(np.int64)
        last = np.ceil(hi - _EPS).astype(np.int64)  # exclusive
        k = int((last - first).max())
        idx = first[:, None] + np.arange(k)[None, :]
        w = np.minimum(hi[:, None], idx + 1.0) - np.maximum(lo[:, None], idx.astype(np.float64))
        w = np.clip(w, 0.0, None)
        valid = idx < last[:, None]
        w = np.where(valid, w, 0.0)
        idx = np.where(valid, idx, first[:, None])
        w /= w.sum(axis=1, keepdims=True)
    else:
        u = (out_corner_nm + (i + 0.5) * out_voxel_nm - src_corner_nm) / src_voxel_nm - 0.5
        j0 = np.floor(u + _EPS).astype(np.int64)
        f = u - j0
        f[np.abs(f) < _EPS] = 0.0
        if np.all(f == 0.0):
            idx, w = j0[:, None], np.ones((out_n, 1))
        else:
            idx = np.stack([j0, j0 + 1], axis=1)
            w = np.stack([1.0 - f, f], axis=1)
    idx = np.clip(idx, 0, src_n - 1)
    return AxisTaps(np.ascontiguousarray(idx), np.ascontiguousarray(w))


def label_axis_taps(src_corner_nm: float, src_voxel_nm: float, src_n: int,
                    out_corner_nm: float, out_voxel_nm: float, out_n: int) -> AxisTaps:
    """Label taps of one axis: source voxels whose centre lies in the output voxel [lo, hi).

    Falls back to the source voxel containing the output centre, or -1 if that is outside
    [0, src_n). Corners in nm.
    """
    _check(src_voxel_nm, src_n, "source axis")
    _check(out_voxel_nm, out_n, "output axis")
    i = np.arange(out_n, dtype=np.float64)
    p_lo = (out_corner_nm + i * out_voxel_nm - src_corner_nm) / src_voxel_nm
    p_hi = p_lo + out_voxel_nm / src_voxel_nm
    jlo = np.clip(np.ceil(p_lo - 0.5 - _EPS).astype(np.int64), 0, src_n)
    jhi = np.clip(np.ceil(p_hi - 0.5 - _EPS).astype(np.int64), 0, src_n)
    count = jhi - jlo
    centre = np.floor((p_lo + p_hi) / 2.0 + _EPS).astype(np.int64)
    nearest = np.where((centre >= 0) & (centre < src_n), centre, -1)
    first = np.where(count > 0, jlo, nearest)
    k = max(1, int(count.max()))
    idx = first[:, None] + np.arange(k)[None, :]
    valid = (np.arange(k)[None, :] < np.maximum(count, 1)[:, None]) & (first[:, None] >= 0)
    idx = np.where(valid, idx, first[:, None])
    return AxisTaps(np.ascontiguousarray(idx), np.ones(idx.shape))


def _axis_args(src, out, axis: int):
    return (_corner(src.translation_nm[axis], src.voxel_size_nm[axis]), float(src.voxel_size_nm[axis]),
            int(src.shape[axis]), _corner(out.translation_nm[axis], out.voxel_size_nm[axis]),
            float(out.voxel_size_nm[axis]), int(out.shape[axis]))


def em_taps(src_grid, out_grid) -> Tuple[AxisTaps, AxisTaps, AxisTaps]:
    """(z, y, x) EM taps from every voxel of ``out_grid`` into ``src_grid`` (grids in nm)."""
    return tuple(em_axis_taps(*_axis_args(src_grid, out_grid, a)) for a in range(3))


def label_taps(src_grid, out_grid) -> Tuple[AxisTaps, AxisTaps, AxisTaps]:
    """(z, y, x) label taps from every voxel of ``out_grid`` into ``src_grid`` (grids in nm)."""
    return tuple(label_axis_taps(*_axis_args(src_grid, out_grid, a)) for a in range(3))


def subset_taps(taps: AxisTaps, start: int, stop: int) -> AxisTaps:
    """Taps of output indices [start, stop) only (e.g. one z slab)."""
    return AxisTaps(taps.index[start:stop], taps.weight[start:stop])


def window_of(taps: AxisTaps) -> Tuple[int, int]:
    """Smallest source window [start, stop) holding every valid tap; (0, 0) if none."""
    valid = taps.index[taps.index >= 0]
    if valid.size == 0:
        return 0, 0
    return int(valid.min()), int(valid.max()) + 1


def shift_taps(taps: AxisTaps, start: int) -> AxisTaps:
    """Taps relative to a source window beginning at ``start`` (-1 stays -1)."""
    idx = np.where(taps.index >= 0, taps.index - start, -1)
    return AxisTaps(idx, taps.weight)


def _apply_axis_linear(arr: np.ndarray, axis: int, taps: AxisTaps) -> np.ndarray:
    if taps.is_identity_slice():
        lo = int(taps.index[0, 0])
        sl = [slice(None)] * arr.ndim
        sl[axis] = slice(lo, lo + taps.n_out)
        return arr[tuple(sl)]
    shape = [1] * arr.ndim
    shape[axis] = taps.n_out
    out = None
    for k in range(taps.index.shape[1]):
        w = taps.weight[:, k]
        if not np.any(w):
            continue
        part = np.take(arr, taps.index[:, k], axis=axis).astype(np.float32, copy=False)
        part *= w.astype(np.float32).reshape(shape)
        if out is None:
            out = part
        else:
            out += part
    return out


def resample_em(src: np.ndarray, taps: Sequence[AxisTaps], out_dtype=np.uint8) -> np.ndarray:
    """Resample a (z, y, x) EM window with (z, y, x) taps already shifted into that window.

    Returns ``out_dtype`` (uint8 by default: rounded and clipped to 0..255) of shape
    (taps_z.n_out, taps_y.n_out, taps_x.n_out). Identity taps cost a slice, not arithmetic.
    """
    arr = src
    for axis in range(3):
        arr = _apply_axis_linear(arr, axis, taps[axis])
    if arr.dtype == np.dtype(out_dtype):
        return np.ascontiguousarray(arr)
    if np.issubdtype(np.dtype(out_dtype), np.integer):
        info = np.iinfo(out_dtype)
        arr = np.rint(arr, out=arr if arr.dtype.kind == "f" else None)
        return np.clip(arr, info.min, info.max).astype(out_dtype)
    return arr.astype(out_dtype)


def _apply_axis_max(arr: np.ndarray, axis: int, taps: AxisTaps, outside_value) -> np.ndarray:
    if taps.is_identity_slice():
        lo = int(taps.index[0, 0])
        sl = [slice(None)] * arr.ndim
        sl[axis] = slice(lo, lo + taps.n_out)
        return arr[tuple(sl)]
    idx = taps.index
    missing = idx[:, 0] < 0
    safe = np.where(idx >= 0, idx, 0)
    if arr.shape[axis] == 0:
        shape = list(arr.shape)
        shape[axis] = taps.n_out
        return np.full(shape, outside_value, dtype=arr.dtype)
    out = np.take(arr, safe[:, 0], axis=axis)
    for k in range(1, idx.shape[1]):
        col = safe[:, k]
        if np.array_equal(col, safe[:, 0]):
            continue
        np.maximum(out, np.take(arr, col, axis=axis), out=out)
    if np.any(missing):
        sl = [slice(None)] * arr.ndim
        sl[axis] = missing
        out[tuple(sl)] = outside_value
    return out


def max_pool_taps(src: np.ndarray, taps: Sequence[AxisTaps], outside_value=IGNORE_RANK) -> np.ndarray:
    """Maximum over the contributing source voxels of every output voxel (separable).

    ``src`` is a (z, y, x) window (ranks, or a 0/1 mask); ``taps`` are label or EM taps shifted
    into that window; output voxels with no source voxel (-1 taps) get ``outside_value``.
    A missing tap on one axis makes the whole output row ``outside_value`` (max-pooling is
    separable, and the outside value is written after each axis so it also propagates).
    """
    arr = src
    for axis in range(3):
        arr = _apply_axis_max(arr, axis, taps[axis], outside_value)
    return np.ascontiguousarray(arr)


def outside_axis(src_corner_nm: float, src_voxel_nm: float, src_n: int,
                 out_corner_nm: float, out_voxel_nm: float, out_n: int) -> np.ndarray:
    """Bool (out_n,): output voxel centre outside the source box [corner, corner + n * voxel)."""
    c = out_corner_nm + (np.arange(out_n) + 0.5) * out_voxel_nm
    lo = src_corner_nm
    hi = src_corner_nm + src_n * src_voxel_nm
    tol = _EPS * max(abs(src_voxel_nm), 1.0)
    return (c < lo - tol) | (c >= hi - tol)


def outside_mask(src_grid, out_grid, z_range: Tuple[int, int] | None = None) -> np.ndarray:
    """Bool (z, y, x) mask over ``out_grid`` (or its z rows [start, stop)): centre outside ``src_grid``."""
    axes = [outside_axis(*_axis_args(src_grid, out_grid, a)) for a in range(3)]
    if z_range is not None:
        axes[0] = axes[0][z_range[0]:z_range[1]]
    return axes[0][:, None, None] | axes[1][None, :, None] | axes[2][None, None, :]


def output_shape(extent_nm: Sequence[float], voxel_nm: Sequence[float]) -> Tuple[int, int, int]:
    """Voxels per axis covering ``extent_nm`` at ``voxel_nm``: round(extent / voxel), at least 1."""
    return tuple(max(1, int(math.floor(e / v + 0.5 + _EPS))) for e, v in zip(extent_nm, voxel_nm))


__all__ += ["outside_mask", "output_shape"]
