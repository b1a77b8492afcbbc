"""Where a datasplit crop's data lives for the converter: raw group, label grid, and per class the arrays forming its mask.

Thin glue over ``cellmap.datasplit`` (rows) and ``cellmap.crop.open_crop`` (label grid and
per crop x class status, incl. groups derived as the union of their atoms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

from cellmap.annotation import Status, crop_status
from cellmap.crop import open_crop
from cellmap.datasplit import DatasplitRow, read_datasplit
from cellmap.grid import Grid

from auto3dseg.convert_plan import ClassSource

__all__ = ["CropRow", "read_crop_rows", "crop_sources"]


@dataclass(frozen=True)
class CropRow:
    """One crop of the datasplit (the first row naming it): ``usage`` (train/validate/test),
    ``dataset`` (e.g. jrc_synth-a), ``crop`` ("crop7"), the raw group location and the row."""

    usage: str
    dataset: str
    crop: str
    raw_group: str
    classes: Tuple[str, ...]
    row: DatasplitRow

    @property
    def key(self) -> str:
        """``<dataset>_<crop>``: the stem of the crop's NIfTI files."""
        return f"{self.dataset}_{self.crop}"


def read_crop_rows(path) -> List[CropRow]:
    """Rows of a CellMap datasplit.csv, one per crop (first row of a crop wins), paths resolved."""
    out: List[CropRow] = []
    seen = set()
    for r in read_datasplit(str(path)):
        row = CropRow(str(r.usage), r.dataset, r.crop, r.raw_location, tuple(r.classes), r)
        if row.key not in seen:
            seen.add(row.key)
            out.append(row)
    return out


def crop_sources(row: CropRow, names: Sequence[str]) -> Tuple[Tuple[ClassSource, ...], Grid]:
    """Per class of ``names`` its status and s0 arrays in this crop, and the crop's s0 label grid."""
    crop = open_crop(row.row, classes=tuple(names))
    out = []
    for name in names:
        st = crop.status[name]
        status = st.status.value if isinstance(st.status, Status) else str(st.status)
        if st.status is Status.UNKNOWN:
            out.append(ClassSource(name, "unknown"))
        elif st.location is not None:
            ms = crop.labels[name]
            out.append(ClassSource(name, status, (ms.array_location(ms.levels[0]),), (st.unknown_value,),
                                   ms.levels[0].grid))
        elif st.source == "union":
            atoms = crop_status(crop.location, st.members, check_contents=False, derive=False)
            arrays, unknown = [], []
            for a in st.members:
                ms = crop.labels[a]
                arrays.append(ms.array_location(ms.levels[0]))
                unknown.append(atoms[a].unknown_value)
            out.append(ClassSource(name, status, tuple(arrays), tuple(unknown), crop.label_grid,
                                   derived_from=tuple(st.members)))
        else:  # e.g. inside an annotated-absent group: known absent, nothing to read
            out.append(ClassSource(name, status, (), (), crop.label_grid, derived_from=tuple(st.members)))
    return tuple(out), crop.label_grid
