"""OME-NGFF 0.4 multiscale metadata of a CellMap group, parsed once into frozen types.

A CellMap multiscale group (raw ``recon-1/em/fibsem-uint8`` or a label class group
``recon-1/labels/groundtruth/cropN/<class>``) has ``.zattrs`` with ``multiscales[0]``:

* ``axes``: three ``{"name", "type": "space", "unit": "nanometer"}`` in the order z, y, x;
* ``datasets[k]``: ``{"path": "sK", "coordinateTransformations": [{"type": "scale", "scale": [z, y, x]},
  {"type": "translation", "translation": [z, y, x]}]}`` (scale first, translation = centre of voxel 0);
* ``version``: ``"0.4"``.

Levels form a 2x pyramid on every axis: ``scale_N = 2 * scale_{N-1}`` and all levels share
the low corner (``translation_N = translation_0 + (2**N - 1) / 2 * scale_0``).

Typical use::

    ms = read_multiscale("data/jrc_synth-a/jrc_synth-a.zarr/recon-1/em/fibsem-uint8")
    level = choose_level(ms, (8, 8, 8))          # the coarsest level not coarser than 8 nm
    level.path, level.grid.voxel_size_nm          # 's1', (10.48, 8.0, 8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Tuple, Union

import numpy as np

from cellmap import _zarr
from cellmap.errors import CellMapError
from cellmap.grid import ALIGN_TOL_VOX, Grid

__all__ = ["MultiscaleError", "ScaleLevel", "Multiscale", "parse_multiscales", "read_multiscale",
           "choose_level", "LEVEL_RULES"]

_AXES = ("z", "y", "x")
_UNITS = ("nanometer",)


class MultiscaleError(CellMapError):
    """OME-NGFF multiscale metadata is missing, malformed or not what CellMap data uses."""


@dataclass(frozen=True)
class ScaleLevel:
    """One pyramid level: its array ``path`` inside the group (e.g. ``"s1"``) and its world ``grid``."""

    path: str
    grid: Grid

    @property
    def voxel_size_nm(self) -> Tuple[float, ...]:
        return self.grid.voxel_size_nm

    @property
    def translation_nm(self) -> Tuple[float, ...]:
        return self.grid.translation_nm

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.grid.shape


@dataclass(frozen=True)
class Multiscale:
    """A validated multiscale group: ``levels`` finest first, all axes (z, y, x) in nm.

    ``location`` is the group's path or URL ("" when parsed from attributes alone); use
    :meth:`array_location` to get a level's array path.
    """

    location: str
    levels: Tuple[ScaleLevel, ...]
    name: Optional[str] = None

    def __len__(self) -> int:
        return len(self.levels)

    def __iter__(self) -> Iterator[ScaleLevel]:
        return iter(self.levels)

    def __getitem__(self, key: Union[int, str]) -> ScaleLevel:
        if isinstance(key, str):
            return self.level(key)
        return self.levels[key]

    @property
    def paths(self) -> Tuple[str, ...]:
        return tuple(lv.path for lv in self.levels)

    @property
    def finest(self) -> ScaleLevel:
        return self.levels[0]

    def level(self, path: str) -> ScaleLevel:
        """The level with this array path, e.g. ``"s0"``."""
        for lv in self.levels:
            if lv.path == path:
                return lv
        raise MultiscaleError(f"{self.location or '<multiscale>'}: no level {path!r}; levels are {list(self.paths)}")

    def array_location(self, level: Union[ScaleLevel, str]) -> str:
        """Path/URL of a level's array (``location/path``)."""
        path = level.path if isinstance(level, ScaleLevel) else str(level)
        return _zarr.join(self.location, path)


# ---------------------------------------------------------------------------------------- parse
def _vector(values: Any, what: str, where: str) -> Tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise MultiscaleError(f"{where}: {what} must be a list of 3 numbers (z, y, x), got {values!r}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise MultiscaleError(f"{where}: {what} must be numbers, got {values!r}") from exc
    if not all(math.isfinite(v) for v in out):
        raise MultiscaleError(f"{where}: {what} must be finite, got {values!r}")
    return out


def _check_axes(axes: Any, where: str) -> None:
    if axes is None:
        raise MultiscaleError(f"{where}: multiscales[0] has no 'axes'; CellMap groups list z, y, x "
                              "with type 'space' and unit 'nanometer' (OME-NGFF 0.4).")
    if not isinstance(axes, list) or len(axes) != 3:
        raise MultiscaleError(f"{where}: 'axes' must list 3 spatial axes z, y, x; got {axes!r}")
    names = []
    for ax in axes:
        if isinstance(ax, str):  # OME-NGFF 0.3 style: names only
            raise MultiscaleError(f"{where}: axes are bare names {axes!r} (OME-NGFF 0.3); 0.4 needs "
                                  "{'name', 'type': 'space', 'unit': 'nanometer'} per axis.")
        if not isinstance(ax, dict) or "name" not in ax:
            raise MultiscaleError(f"{where}: each axis must be a dict with a 'name', got {ax!r}")
        if ax.get("type", "space") != "space":
            raise MultiscaleError(f"{where}: axis {ax['name']!r} has type {ax.get('type')!r}; only 3 'space' "
                                  "axes (z, y, x) are supported (no channel or time axis).")
        unit = ax.get("unit")
        if unit not in _UNITS:
            raise MultiscaleError(f"{where}: axis {ax['name']!r} has unit {unit!r}; expected 'nanometer'. "
                                  "Convert the scale and translation to nm and set unit 'nanometer'.")
        names.append(ax["name"])
    if tuple(names) != _AXES:
        raise MultiscaleError(f"{where}: axes are {names}; expected ['z', 'y', 'x'] in that order. "
                              "Transpose the arrays (and their scale/translation) to z, y, x.")


def _parse_transforms(ds: Mapping, where: str, require_translation: bool):
    path = ds.get("path")
    tfs = ds.get("coordinateTransformations")
    if not isinstance(tfs, list) or not tfs:
        raise MultiscaleError(f"{where}: dataset {path!r} has no coordinateTransformations; it needs "
                              "[{'type': 'scale', ...}, {'type': 'translation', ...}].")
    types = [t.get("type") if isinstance(t, dict) else None for t in tfs]
    if types[0] != "scale":
        raise MultiscaleError(f"{where}: dataset {path!r} transforms are {types}; the first must be 'scale' "
                              "and a 'translation' may follow it (OME-NGFF 0.4 order: scale, then translation).")
    if len(tfs) > 2 or (len(tfs) == 2 and types[1] != "translation"):
        raise MultiscaleError(f"{where}: dataset {path!r} transforms are {types}; only ['scale', 'translation'] "
                              "is allowed (one scale, then at most one translation).")
    scale = _vector(tfs[0].get("scale"), f"dataset {path!r} scale", where)
    if any(s <= 0 for s in scale):
        raise MultiscaleError(f"{where}: dataset {path!r} scale {list(scale)} must be > 0 nm on every axis.")
    if len(tfs) == 1:
        if require_translation:
            raise MultiscaleError(
                f"{where}: dataset {path!r} has a scale but no translation. CellMap data always carries "
                "the centre of voxel 0; add {'type': 'translation', 'translation': [z, y, x]} after the scale "
                "(or pass require_translation=False to assume [0, 0, 0]).")
        translation = (0.0, 0.0, 0.0)
    else:
        translation = _vector(tfs[1].get("translation"), f"dataset {path!r} translation", where)
    return scale, translation


def _check_pyramid(levels: Tuple[ScaleLevel, ...], where: str, rel_tol: float, tol_vox: float) -> None:
    for prev, cur in zip(levels, levels[1:]):
        ratio = [c / p for c, p in zip(cur.voxel_size_nm, prev.voxel_size_nm)]
        if not all(abs(r - 2.0) <= 2.0 * rel_tol for r in ratio):
            raise MultiscaleError(
                f"{where}: level {cur.path!r} voxel size {list(cur.voxel_size_nm)} is {[round(r, 4) for r in ratio]} "
                f"x level {prev.path!r} ({list(prev.voxel_size_nm)}); CellMap pyramids are 2x on every axis. "
                "Pass strict_pyramid=False to accept other ratios.")
        shift = (np.asarray(cur.grid.corner_nm) - np.asarray(levels[0].grid.corner_nm)) / np.asarray(cur.voxel_size_nm)
        if np.any(np.abs(shift) > tol_vox):
            raise MultiscaleError(
                f"{where}: level {cur.path!r} translation {list(cur.translation_nm)} puts its low corner "
                f"{[round(float(s), 4) for s in shift]} voxels away from level {levels[0].path!r}'s corner; expected "
                f"translation_N = translation_0 + (2**N - 1)/2 * scale_0 (centre-of-voxel convention). "
                "Pass strict_pyramid=False to accept it.")


def parse_multiscales(attrs: Mapping[str, Any], shapes: Union[Mapping[str, Tuple[int, ...]], Callable[[str], Tuple[int, ...]]],
                      location: str = "", strict_pyramid: bool = True, require_translation: bool = True,
                      rel_tol: float = 1e-3, tol_vox: float = ALIGN_TOL_VOX) -> Multiscale:
    """Validate ``attrs["multiscales"][0]`` (OME-NGFF 0.4) and return a :class:`Multiscale`.

    ``shapes`` maps each dataset path to its array shape (z, y, x) (a dict or a function).
    ``location`` only names the group in error messages and in the result. With
    ``strict_pyramid`` the levels must be 2x apart on every axis (``rel_tol``) and share the
    low corner (``tol_vox`` voxels). Raises :class:`MultiscaleError` naming the group and the fix.
    """
    where = f"{location or '<attrs>'}/.zattrs"
    if not isinstance(attrs, Mapping) or "multiscales" not in attrs:
        keys = sorted(attrs) if isinstance(attrs, Mapping) else type(attrs).__name__
        raise MultiscaleError(f"{where}: no 'multiscales' attribute (found keys {keys}); this is not an OME-NGFF "
                              "multiscale group. Point at the group that holds s0, s1, ... (e.g. "
                              "recon-1/em/fibsem-uint8 or recon-1/labels/groundtruth/cropN/<class>).")
    ms = attrs["multiscales"]
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        raise MultiscaleError(f"{where}: 'multiscales' must be a non-empty list of dicts, got {ms!r}")
    m0 = ms[0]
    version = m0.get("version")
    if version is not None and str(version) != "0.4":
        raise MultiscaleError(f"{where}: multiscales version {version!r}; only OME-NGFF '0.4' is supported.")
    _check_axes(m0.get("axes"), where)
    top = m0.get("coordinateTransformations")
    if top:
        if not (len(top) == 1 and top[0].get("type") == "scale"
                and all(float(v) == 1.0 for v in top[0].get("scale", []))):
            raise MultiscaleError(f"{where}: a multiscales-level coordinateTransformations {top!r} is not supported; "
                                  "fold it into each dataset's scale and translation.")
    datasets = m0.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise MultiscaleError(f"{where}: multiscales[0] has no 'datasets' (the list of levels s0, s1, ...).")
    get_shape = shapes if callable(shapes) else (lambda p: shapes[p])
    levels = []
    for ds in datasets:
        if not isinstance(ds, dict) or not isinstance(ds.get("path"), str):
            raise MultiscaleError(f"{where}: every dataset needs a string 'path', got {ds!r}")
        scale, translation = _parse_transforms(ds, where, require_translation)
        try:
            shape = tuple(int(s) for s in get_shape(ds["path"]))
        except KeyError as exc:
            raise MultiscaleError(f"{where}: dataset {ds['path']!r} is listed but its array is missing.") from exc
        if len(shape) != 3:
            raise MultiscaleError(f"{where}: array {ds['path']!r} has shape {list(shape)}; expected 3 axes (z, y, x).")
        levels.append(ScaleLevel(ds["path"], Grid(scale, translation, shape)))
    levels = tuple(levels)
    if len({lv.path for lv in levels}) != len(levels):
        raise MultiscaleError(f"{where}: dataset paths repeat: {[lv.path for lv in levels]}")
    if strict_pyramid:
        _check_pyramid(levels, where, rel_tol, tol_vox)
    elif any(any(c < p for c, p in zip(cur.voxel_size_nm, prev.voxel_size_nm)) for prev, cur in zip(levels, levels[1:])):
        raise MultiscaleError(f"{where}: levels must be listed finest first; voxel sizes are "
                              f"{[list(lv.voxel_size_nm) for lv in levels]}")
    return Multiscale(location=str(location), levels=levels, name=m0.get("name"))


def read_multiscale(location: str, strict_pyramid: bool = True, require_translation: bool = True) -> Multiscale:
    """Read and validate the multiscale group at ``location`` (local path or URL).

    Shapes come from each level's ``.zarray``. Raises :class:`MultiscaleError` (bad metadata)
    or :class:`cellmap._zarr.ZarrNotFoundError` (group or level array missing).
    """
    location = str(location)
    attrs = _zarr.read_attrs(location)

    def shape_of(path: str):
        try:
            return _zarr.array_meta(_zarr.join(location, path))["shape"]
        except _zarr.ZarrNotFoundError as exc:
            raise MultiscaleError(f"{location}/.zattrs lists level {path!r} but its array is missing: {exc}") from exc

    return parse_multiscales(attrs, shape_of, location=location, strict_pyramid=strict_pyramid,
                             require_translation=require_translation)


# ------------------------------------------------------------------------------- choose a level
def _log2_distance(level: ScaleLevel, target) -> float:
    return float(sum(abs(math.log2(v / t)) for v, t in zip(level.voxel_size_nm, target)))


#: The level-choice rules :func:`choose_level` knows, with what each returns.
LEVEL_RULES = {
    "not_coarser": "the coarsest level whose voxel size is <= target * (1 + rel_tol) on every axis "
                   "(downsampling it to the target never invents detail); if none (target finer than "
                   "the finest level on some axis), the finest level, or an error with fallback='error'",
    "nearest": "the level whose voxel size is closest to the target in sum over axes of |log2(voxel/target)| "
               "(ties go to the finer level)",
    "not_finer": "the finest level whose voxel size is >= target * (1 - rel_tol) on every axis; if none, "
                 "the coarsest level, or an error with fallback='error'",
}


def choose_level(multiscale: Multiscale, target_voxel_nm, rule: str = "not_coarser", rel_tol: float = 0.05,
                 exclude: Iterable[str] = (), fallback: str = "nearest_end") -> ScaleLevel:
    """Pick the pyramid level to read for a target voxel size, by **physical** voxel size.

    ``target_voxel_nm``: (z, y, x) nm, or one number for all axes. ``rule`` is one of
    :data:`LEVEL_RULES` (default ``"not_coarser"``: the coarsest level that is still at
    least as fine as the target on every axis, within ``rel_tol``). Example, raw levels
    s0 (5.24, 4, 4), s1 (10.48, 8, 8), s2 (20.96, 16, 16): target (10.48, 8, 8) -> s1;
    target 8 nm isotropic -> s0 (s1 is 10.48 nm in z, coarser than 8 * 1.05); target 16 nm
    with ``rule="nearest"`` -> s2. ``exclude`` drops level paths (e.g. levels known to be missing
    locally). ``fallback``: ``"nearest_end"`` returns the finest (or coarsest) level when no
    level satisfies the rule, ``"error"`` raises :class:`MultiscaleError`.
    """
    target = np.broadcast_to(np.asarray(target_voxel_nm, dtype=float), (3,))
    if np.any(target <= 0):
        raise MultiscaleError(f"target voxel size must be > 0 nm, got {list(target)}")
    excl = set(exclude)
    levels = [lv for lv in multiscale.levels if lv.path not in excl]
    where = multiscale.location or "<multiscale>"
    if not levels:
        raise MultiscaleError(f"{where}: no level left to choose from (all of {list(multiscale.paths)} excluded).")
    have = ", ".join(f"{lv.path}={list(lv.voxel_size_nm)}" for lv in levels)
    if rule == "nearest":
        return min(levels, key=lambda lv: (_log2_distance(lv, target), float(np.prod(lv.voxel_size_nm))))
    if rule in ("not_coarser", "not_finer"):
        finer = rule == "not_coarser"
        bound = target * (1 + rel_tol) if finer else target * (1 - rel_tol)
        ok = [lv for lv in levels if np.all(np.asarray(lv.voxel_size_nm) <= bound if finer
                                            else np.asarray(lv.voxel_size_nm) >= bound)]
        volume = lambda lv: float(np.prod(lv.voxel_size_nm))  # noqa: E731
        if ok:  # the level closest to the target on the allowed side
            return max(ok, key=volume) if finer else min(ok, key=volume)
        if fallback == "error":
            raise MultiscaleError(
                f"{where}: no level is as {'fine' if finer else 'coarse'} as {list(target)} nm on every axis "
                f"(have {have}); use rule='nearest' or a {'coarser' if finer else 'finer'} target.")
        return min(levels, key=volume) if finer else max(levels, key=volume)
    raise MultiscaleError(f"unknown level rule {rule!r}; choose one of {sorted(LEVEL_RULES)}")
