"""One CellMap crop opened from a datasplit row: raw pyramid, label grid, class arrays and status.

Typical use::

    rows = read_datasplit("datasplit.csv")
    crop = open_crop(rows[0])
    crop.label_grid                 # Grid of the label s0 arrays (z, y, x nm)
    crop.status["mito"].status      # Status.ANNOTATED / ABSENT / UNKNOWN
    mito = crop.read_class("mito")  # (z, y, x) array on crop.label_grid
    level = choose_level(crop.raw, crop.label_grid.voxel_size_nm)
    em, outside = read_box(crop.raw, level, crop.label_grid.box, snap="outward")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from cellmap import _zarr
from cellmap.annotation import ClassStatus, Status, crop_class_names, crop_status
from cellmap.datasplit import DatasplitError, DatasplitRow, check_rows
from cellmap.errors import CellMapError
from cellmap.grid import ALIGN_TOL_VOX, Grid
from cellmap.io import open_level, read_window
from cellmap.multiscale import Multiscale, read_multiscale

__all__ = ["Crop", "CropError", "open_crop"]


class CropError(CellMapError):
    """A crop's class arrays disagree with each other or a requested class cannot be read."""


@dataclass(frozen=True)
class Crop:
    """A crop of a CellMap dataset with everything read from metadata.

    ``raw``: the raw EM multiscale; ``labels``: class name -> multiscale for every class group
    present in the crop (not only the requested ones); ``label_grid``: the s0 grid shared by
    all class groups (z, y, x nm); ``classes``: the requested classes (the row's bracket list
    unless overridden) and ``status`` for each of them.
    """

    row: DatasplitRow
    raw: Multiscale
    labels: Mapping[str, Multiscale]
    label_grid: Grid
    classes: Tuple[str, ...]
    status: Mapping[str, ClassStatus]

    @property
    def dataset(self) -> str:
        return self.row.dataset

    @property
    def crop(self) -> str:
        return self.row.crop

    @property
    def name(self) -> str:
        """``<dataset>_<crop>``, e.g. ``jrc_synth-a_crop1``."""
        return f"{self.dataset}_{self.crop}"

    @property
    def location(self) -> str:
        return self.row.crop_location

    def annotated(self) -> Tuple[str, ...]:
        """Requested classes whose status is ANNOTATED or ABSENT."""
        return tuple(c for c in self.classes if self.status[c].annotated)

    def read_class(self, name: str) -> np.ndarray:
        """The class's s0 array on :attr:`label_grid`, (z, y, x).

        A stored group is returned with its stored dtype and values (instance ids or 0/1).
        A group derived as the union of its atoms returns uint8 0/1. A class inside an
        annotated-absent group returns zeros. UNKNOWN raises :class:`CropError`.
        """
        st = self.status.get(name) or crop_status(self.location, [name])[name]
        if st.status is Status.UNKNOWN:
            raise CropError(f"{self.location}: class {name!r} is not annotated in this crop (no group {name}/); "
                            "treat it as unknown (ignore), not as absent.")
        if st.location is not None:
            ms = self.labels[name]
            arr = open_level(ms, ms.levels[0])
            return read_window(arr, (0, 0, 0), arr.shape)[0]
        out = np.zeros(self.label_grid.shape, dtype=np.uint8)
        if st.source == "union":
            atom_status = crop_status(self.location, st.members, check_contents=False, derive=False)
            for atom in st.members:
                a = self.read_class(atom)
                pos = a != 0
                unk = atom_status[atom].unknown_value
                if unk is not None:
                    pos &= a != unk
                out |= pos.astype(np.uint8)
        return out

    def unknown_mask(self, name: str) -> Optional[np.ndarray]:
        """Bool (z, y, x) mask of voxels whose value is the class's declared unknown value, or
        None when the class has no unknown value (see :func:`cellmap.annotation.unknown_value`)."""
        st = self.status.get(name) or crop_status(self.location, [name])[name]
        if st.unknown_value is None or st.location is None:
            return None
        return self.read_class(name) == st.unknown_value


def _label_grid(crop_location: str, labels: Dict[str, Multiscale], tol_vox: float) -> Grid:
    if not labels:
        raise CropError(f"{crop_location}: no class groups in this crop; nothing was annotated here.")
    names = sorted(labels)
    ref = labels[names[0]].levels[0].grid
    for n in names[1:]:
        g = labels[n].levels[0].grid
        if g.shape != ref.shape or not g.same_voxel_size(ref) or g.offset_in(ref, tol_vox=tol_vox) != (0, 0, 0):
            raise CropError(f"{crop_location}: class {n!r} s0 grid ({g.describe()}) differs from {names[0]!r} "
                            f"({ref.describe()}); every class of a crop must share one s0 grid.")
    return ref


def open_crop(row: DatasplitRow, classes: Optional[Sequence[str]] = None, check_contents: bool = True,
              derive: bool = True, tol_vox: float = ALIGN_TOL_VOX) -> Crop:
    """Open the crop of a datasplit row: validate raw and label metadata (the raw pyramid must
    be 2x per level; label groups only need valid axes and transforms), the shared label s0
    grid, and the status of ``classes`` (default: the row's bracket list). Raises
    :class:`cellmap.datasplit.DatasplitError` for missing groups, :class:`CropError` when class
    grids disagree, :class:`cellmap.multiscale.MultiscaleError` for bad metadata."""
    check_rows([row])
    try:
        raw = read_multiscale(row.raw_location)
    except CellMapError as exc:
        raise DatasplitError(f"{row.where}: raw {row.raw_location}: {exc}") from exc
    # label pyramids: only s0 is used, and how CellMap built s1+ is undocumented, so their
    # ratios are not enforced (axes, units and transforms still are)
    labels = {n: read_multiscale(_zarr.join(row.crop_location, n), strict_pyramid=False)
              for n in crop_class_names(row.crop_location)}
    grid = _label_grid(row.crop_location, labels, tol_vox)
    wanted = tuple(classes) if classes is not None else row.classes
    status = crop_status(row.crop_location, wanted, check_contents=check_contents, derive=derive)
    return Crop(row, raw, labels, grid, wanted, status)

