"""Read and write CellMap's ``datasplit.csv`` (the toolbox's exact format).

Format (``make_datasplit_csv``): no header; every field double-quoted; 5 columns::

    "train","/abs/jrc_x/jrc_x.zarr","recon-1/em/fibsem-uint8","/abs/jrc_x/jrc_x.zarr","recon-1/labels/groundtruth/crop234/[nuc,mito]"

i.e. usage, raw zarr root, raw group path, GT zarr root, crop group path + ``/[class,...]``.
Also read: the 3-column form ``usage, raw root/path, GT root/path/[classes]`` (cellmap-data's
``_parse_csv``), blank lines and ``#`` comment lines. Relative roots resolve against the CSV's
folder; ``s3://`` (or other URL) roots are kept as URLs (reading them needs fsspec + s3fs).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

from cellmap import _zarr
from cellmap.atomic import write_text_atomic
from cellmap.errors import CellMapError

__all__ = ["DatasplitError", "DatasplitRow", "parse_class_path", "read_datasplit", "write_datasplit",
           "format_datasplit", "check_rows"]

_BRACKET = re.compile(r"^(?P<crop>.*?)/?\[(?P<classes>[^\[\]]*)\]$")


class DatasplitError(CellMapError):
    """A malformed ``datasplit.csv`` or a row that points at data that is not there."""


@dataclass(frozen=True)
class DatasplitRow:
    """One crop of a datasplit: ``usage`` ("train"/"validate"), raw and GT zarr roots (absolute
    paths or URLs after reading), the raw group path and crop group path inside them, and the
    bracketed ``classes`` in file order. ``source``/``line`` name where the row came from."""

    usage: str
    raw_root: str
    raw_path: str
    gt_root: str
    crop_path: str
    classes: Tuple[str, ...]
    source: str = ""
    line: int = 0

    @property
    def raw_location(self) -> str:
        """The raw multiscale group, e.g. ``.../jrc_x.zarr/recon-1/em/fibsem-uint8``."""
        return _zarr.join(self.raw_root, self.raw_path)

    @property
    def crop_location(self) -> str:
        """The crop group, e.g. ``.../jrc_x.zarr/recon-1/labels/groundtruth/crop234``."""
        return _zarr.join(self.gt_root, self.crop_path)

    @property
    def dataset(self) -> str:
        """Dataset name: the GT zarr root's file name without ``.zarr`` (e.g. ``jrc_cos7-1a``)."""
        base = self.gt_root.rstrip("/").split("/")[-1]
        return base[:-5] if base.endswith(".zarr") else base

    @property
    def crop(self) -> str:
        """Crop folder name, e.g. ``crop234``."""
        return self.crop_path.rstrip("/").split("/")[-1]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else "<datasplit row>"


def parse_class_path(field: str, where: str = "<datasplit>") -> Tuple[str, Tuple[str, ...]]:
    """Split ``recon-1/labels/groundtruth/crop234/[nuc,mito]`` into the crop path and classes."""
    m = _BRACKET.match(field.strip())
    if not m:
        raise DatasplitError(
            f"{where}: GT field {field!r} must end in a bracketed class list, e.g. "
            "'recon-1/labels/groundtruth/crop234/[nuc,mito]' (square brackets, comma-separated, no nesting).")
    classes = tuple(c.strip() for c in m.group("classes").split(",") if c.strip())
    if not classes:
        raise DatasplitError(f"{where}: GT field {field!r} has an empty class list []; list at least one class.")
    bad = [c for c in classes if not re.fullmatch(r"[A-Za-z0-9_\-]+", c)]
    if bad:
        raise DatasplitError(f"{where}: class names {bad} in {field!r} are not plain names (letters, digits, _ , -).")
    return m.group("crop").rstrip("/"), classes


def _split_zarr(path: str, where: str) -> Tuple[str, str]:
    i = path.rfind(".zarr/")
    if i < 0:
        raise DatasplitError(f"{where}: path {path!r} has no '.zarr/' to split into store root and group path.")
    return path[: i + 5], path[i + 6:]


def _resolve(root: str, base_dir: str) -> str:
    if _zarr.is_remote(root) or os.path.isabs(root):
        return root
    return os.path.normpath(os.path.join(base_dir, root))


def read_datasplit(path: str, resolve: bool = True) -> List[DatasplitRow]:
    """Read a datasplit CSV into rows (5- or 3-column form; ``#`` comments and blank lines
    skipped). With ``resolve`` relative roots are made absolute against the CSV's folder.
    Raises :class:`DatasplitError` naming the file, line and fix."""
    path = str(path)
    if not os.path.isfile(path):
        raise DatasplitError(f"{path}: datasplit file not found. Build the sample with `python -m cellmap.sample data` "
                             "or write one with `csc make-datasplit`.")
    base = os.path.dirname(os.path.abspath(path))
    rows: List[DatasplitRow] = []
    with open(path, "r", encoding="utf-8", newline="") as f:
        lines = f.read().splitlines()
    for n, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        where = f"{path}:{n}"
        fields = next(csv.reader([text], skipinitialspace=True))
        if len(fields) == 5:
            usage, raw_root, raw_path, gt_root, gt_field = fields
        elif len(fields) == 3:
            usage, raw_full, gt_full = fields
            raw_root, raw_path = _split_zarr(raw_full, where)
            gt_root, gt_field = _split_zarr(gt_full, where)
        else:
            raise DatasplitError(
                f"{where}: {len(fields)} columns; expected 5 (usage, raw zarr, raw path, GT zarr, crop/[classes]) "
                "or 3 (usage, raw zarr/path, GT zarr/crop/[classes]). Quote every field: the class list "
                "contains commas.")
        crop_path, classes = parse_class_path(gt_field, where)
        if resolve:
            raw_root, gt_root = _resolve(raw_root, base), _resolve(gt_root, base)
        rows.append(DatasplitRow(usage.strip(), raw_root, raw_path.strip("/"), gt_root, crop_path.strip("/"),
                                 classes, source=path, line=n))
    if not rows:
        raise DatasplitError(f"{path}: no rows (only comments or blank lines).")
    return rows


def format_datasplit(rows: Iterable[DatasplitRow], relative_to: Optional[str] = None) -> str:
    """The CSV text of rows in the exact 5-column, all-quoted, headerless form. With
    ``relative_to`` (a folder), local roots are written relative to it."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for r in rows:
        raw_root, gt_root = r.raw_root, r.gt_root
        if relative_to is not None:
            raw_root, gt_root = (root if _zarr.is_remote(root) else os.path.relpath(os.path.abspath(root), relative_to)
                                 for root in (raw_root, gt_root))
        w.writerow([r.usage, raw_root, r.raw_path, gt_root, f"{r.crop_path}/[{','.join(r.classes)}]"])
    return buf.getvalue()


def write_datasplit(path: str, rows: Sequence[DatasplitRow], relative: bool = False) -> str:
    """Write rows atomically to ``path`` (temp file + rename). ``relative`` writes local roots
    relative to the CSV's folder. Returns the path."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    return write_text_atomic(path, format_datasplit(rows, relative_to=folder if relative else None))


def check_rows(rows: Sequence[DatasplitRow], check_classes: bool = False) -> None:
    """Raise :class:`DatasplitError` for the first row whose raw group or crop group (or, with
    ``check_classes``, a listed class group) is missing from a local store."""
    for r in rows:
        checks = [("raw group", r.raw_location, ".zgroup"), ("crop group", r.crop_location, ".zgroup")]
        if check_classes:
            checks += [(f"class group {c!r}", _zarr.join(r.crop_location, c), ".zgroup") for c in r.classes]
        for what, loc, marker in checks:
            if _zarr.is_remote(loc):
                continue
            if not os.path.exists(os.path.join(_zarr.local_path(loc), marker)):
                raise DatasplitError(
                    f"{r.where}: {what} {loc} does not exist (no {marker}). Fix the path in the CSV (relative "
                    "paths are resolved against the CSV's folder), or download the data (csc fetch-data "
                    f"--crops {r.crop.replace('crop', '')}).")

