"""The datalist a run reads: cases with absolute paths, folds, class names and annotated sets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from auto3dseg.errors import Auto3DSegError
from auto3dseg.nifti import nifti_stem

__all__ = ["DatalistReadError", "Case", "RunDatalist", "load_run_datalist", "DEFAULT_DATALIST"]

#: Where the converter writes its datalist (relative to the current folder).
DEFAULT_DATALIST = "data/nifti/datalist.json"


class DatalistReadError(Auto3DSegError):
    """The datalist is missing, malformed, or lists files that do not exist."""


@dataclass(frozen=True)
class Case:
    """One training case: absolute image/label paths, fold, annotated bitmask (bit k = class_names[k])."""

    image: str
    label: str
    fold: int | None = None
    annotated: int | None = None

    @property
    def name(self) -> str:
        """The label file name without ``.nii.gz`` (``<dataset>_<crop>``)."""
        return nifti_stem(self.label or self.image)


@dataclass(frozen=True)
class RunDatalist:
    """A datalist.json parsed once: ``dataroot`` is the folder relative paths resolve against."""

    path: str
    dataroot: str
    raw: dict = field(repr=False)
    cases: tuple
    testing: tuple  # absolute image paths
    class_names: tuple  # ({"name": str, "index": [int, ...]}, ...)
    ignore_value: int | None

    @property
    def folds(self) -> list:
        """Sorted fold ids present in the training cases."""
        return sorted({c.fold for c in self.cases if c.fold is not None})

    def class_of_value(self) -> dict:
        """Label value -> class name (from ``class_names[*].index``)."""
        out = {}
        for c in self.class_names:
            for v in c.get("index", []):
                out[int(v)] = c["name"]
        return out


def _resolve(root: str, rel: str) -> str:
    return rel if os.path.isabs(rel) else os.path.normpath(os.path.join(root, rel))


def load_run_datalist(path, check_files: bool = True) -> RunDatalist:
    """Parse a converter datalist (see the converted-data contract in README ``convert``).

    Args:
        path: datalist.json; relative ``image``/``label`` paths resolve against its folder.
        check_files: raise if a listed file is missing.

    Raises:
        DatalistReadError: missing file, no ``training`` list, items without image/label, missing files.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DatalistReadError(
            f"{path}: datalist not found; convert first (`convert_zarr_to_nifti`, default output data/nifti) "
            "or pass --datalist"
        )
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except (OSError, json.JSONDecodeError) as err:
        raise DatalistReadError(f"{path}: not a readable JSON datalist ({err})") from err
    root = os.path.dirname(path)
    training = raw.get("training")
    if not isinstance(training, list) or not training:
        raise DatalistReadError(f"{path}: no `training` list of cases; re-run the conversion")
    cases, missing = [], []
    for i, item in enumerate(training):
        if not isinstance(item, dict) or "image" not in item or "label" not in item:
            raise DatalistReadError(f"{path}: training item {i} needs `image` and `label` keys, found {item!r}")
        image, label = item["image"], item["label"]
        if isinstance(image, list):
            if len(image) != 1:
                raise DatalistReadError(f"{path}: item {i} has {len(image)} image channels; EM has one")
            image = image[0]
        fold = item.get("fold")
        if fold is not None and not isinstance(fold, int):
            raise DatalistReadError(f"{path}: item {i} fold {fold!r} is not an integer (MONAI would mangle it)")
        case = Case(_resolve(root, image), _resolve(root, label), fold, item.get("annotated"))
        cases.append(case)
        missing += [p for p in (case.image, case.label) if check_files and not os.path.isfile(p)]
    testing = []
    for i, item in enumerate(raw.get("testing", []) or []):
        image = item["image"] if isinstance(item, dict) else item
        image = image[0] if isinstance(image, list) else image
        testing.append(_resolve(root, image))
    if missing:
        shown = "\n  ".join(missing[:10])
        raise DatalistReadError(
            f"{path}: {len(missing)} listed file(s) do not exist, e.g.\n  {shown}\nre-run the conversion or fix the paths"
        )
    return RunDatalist(
        path=path,
        dataroot=root,
        raw=raw,
        cases=tuple(cases),
        testing=tuple(testing),
        class_names=tuple(raw.get("class_names") or ()),
        ignore_value=raw.get("ignore_value"),
    )

