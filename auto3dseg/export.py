"""Predictions in CellMap's crop space: NIfTI ensemble outputs -> submission.zarr (+ zip) on each crop's own grid; scoring of path pairs.

Steps per prediction file ``<dataset>_crop<ID>[_0000][_ensemble].nii.gz``:

1. read the NIfTI (array axes (x, y, z[, c]); the affine maps voxel centres to world (x, y, z),
   its numbers taken as nm, as the converter writes them) and turn it into a (z, y, x) array on a
   :class:`cellmap.grid.Grid`;
2. per class of the datalist's ``class_names`` (channel k = class k): a multi-channel output is
   thresholded (probabilities ``> threshold``, integers ``> 0``); a single label map gives class k
   where its value is in ``class_names[k].index`` (the converter's encoding: a group is the union
   of its members);
3. instance classes are split into connected components (26-connectivity) on the NIfTI grid;
4. each class is resampled onto the crop's own grid (voxel size, translation, shape; nearest voxel
   centre in world coordinates, zero outside the prediction) and written slab by slab as
   ``submission.zarr/crop<ID>/<class>`` (zarr v2, ``voxel_size``/``translation`` attributes);
5. the hierarchy is zipped (``submission.zip``).

Crop grids come from the converter's ``conversion_report.json`` (each crop's ``label_grid``), from
a CellMap ``test_crop_manifest.csv`` (``crop_name,dataset,class_label,voxel_size,translation,
shape``) or from the ground-truth groups a ``datasplit.csv`` points at.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from auto3dseg.datalist import decode_bitmask
from auto3dseg.errors import Auto3DSegError
from auto3dseg.nifti import nifti_stem
from cellmap.evaluate import instance_class_names, label_components
from cellmap.grid import Grid
from cellmap._zarr import join
from cellmap.submission import LabelWriter, OnGrid, crop_name, label_dtype, read_label, zip_submission

__all__ = [
    "ExportError",
    "CropTarget",
    "read_nifti",
    "class_masks",
    "case_key",
    "targets_from_report",
    "targets_from_manifest",
    "targets_from_datasplit",
    "load_targets",
    "export_case",
    "export_predictions",
    "nifti_to_hierarchy",
    "evaluate_paths",
    "export_for_run",
]

_SUFFIXES = ("_ensemble", "_seg", "_pred", "_0000")
_CROP_RE = re.compile(r"(?:^|_)(crop\d+)$")


class ExportError(Auto3DSegError):
    """A prediction that cannot be exported (no grid for its crop, unreadable NIfTI, bad classes)."""


@dataclass(frozen=True)
class CropTarget:
    """Where one case goes: its file ``key`` (``<dataset>_crop<ID>``), ``crop`` name, the crop's
    own ``grid`` ((z, y, x) nm) and the ``classes`` to write there (None = every class)."""

    key: str
    crop: str
    grid: Grid
    classes: Optional[Tuple[str, ...]] = None


def case_key(path) -> str:
    """The case key of a NIfTI file name: the stem without ``.nii[.gz]`` and the suffixes
    ``_ensemble``, ``_seg``, ``_pred``, ``_0000`` (``jrc_x_crop7_0000_ensemble`` -> ``jrc_x_crop7``)."""
    name = nifti_stem(path)
    changed = True
    while changed:
        changed = False
        for s in _SUFFIXES:
            if name.endswith(s):
                name, changed = name[: -len(s)], True
    return name


def _crop_of_key(key: str, where: str) -> str:
    m = _CROP_RE.search(key)
    if not m:
        raise ExportError(f"{where}: cannot tell the crop from {key!r}; name files "
                          "<dataset>_crop<ID>... as the converter does")
    return m.group(1)


def read_nifti(path) -> Tuple[np.ndarray, Grid]:
    """(data, grid): data (z, y, x) or (c, z, y, x) from a NIfTI whose array axes are (x, y, z[, c])
    and whose affine maps voxel centres to world (x, y, z) in nm (diagonal; negative spacings are
    flipped to positive). Trailing singleton axes beyond the 4th are dropped."""
    import nibabel as nib

    img = nib.load(str(path))
    aff = np.asarray(img.affine, dtype=np.float64)
    lin = aff[:3, :3]
    if np.any(np.abs(lin - np.diag(np.diag(lin))) > 1e-6 * np.abs(np.diag(lin)).max()):
        raise ExportError(f"{path}: the affine is rotated or sheared ({lin.tolist()}); predictions "
                          "must keep the converter's axis-aligned affine (orientation_ras: false)")
    data = np.asarray(img.dataobj)
    while data.ndim > 4 and data.shape[3] == 1:
        data = data.reshape(data.shape[:3] + data.shape[4:])
    if data.ndim not in (3, 4):
        raise ExportError(f"{path}: expected a 3-D label map or a 4-D (x, y, z, c) array, got "
                          f"shape {data.shape}")
    spacing = np.diag(lin).copy()
    origin = aff[:3, 3].copy()
    for ax in range(3):
        if spacing[ax] < 0:
            data = np.flip(data, axis=ax)
            origin[ax] += (data.shape[ax] - 1) * spacing[ax]
            spacing[ax] = -spacing[ax]
    if data.ndim == 4:
        data = np.transpose(data, (3, 2, 1, 0))  # (c, z, y, x)
    else:
        data = np.transpose(data, (2, 1, 0))
    grid = Grid(tuple(spacing[::-1]), tuple(origin[::-1]), data.shape[-3:])
    return np.ascontiguousarray(data), grid


def _names(class_names: Sequence) -> List[str]:
    return [c["name"] if isinstance(c, Mapping) else str(c) for c in class_names]


def class_masks(data: np.ndarray, class_names: Sequence, threshold: float = 0.5,
                where: str = "prediction") -> Iterator[Tuple[str, np.ndarray]]:
    """Yield (class name, bool (z, y, x) mask), one class at a time (memory: one mask), from a
    (c, z, y, x) output (channel k = ``class_names[k]``; floats ``> threshold``, integers ``> 0``)
    or a (z, y, x) label map (class k where the value is in ``class_names[k]["index"]``, default
    value k + 1). ``class_names``: MONAI's list of ``{"name", "index"}`` (or plain names)."""
    names = _names(class_names)
    if data.ndim == 4:
        if data.shape[0] != len(names):
            raise ExportError(f"{where}: {data.shape[0]} channels but {len(names)} classes "
                              f"({', '.join(names)}); pass the datalist the model was trained on")
        cut = threshold if data.dtype.kind == "f" else 0
        for k, n in enumerate(names):
            yield n, data[k] > cut
        return
    if data.dtype.kind == "f":
        if np.any(data != np.round(data)):
            raise ExportError(f"{where}: a single-channel float output is not a label map; "
                              "export sigmoid outputs with one channel per class")
        data = data.astype(np.int64)
    for k, c in enumerate(class_names):
        index = c.get("index", [k + 1]) if isinstance(c, Mapping) else [k + 1]
        yield names[k], np.isin(data, np.asarray(index, dtype=np.int64))


def _vec(text: str) -> Tuple[float, ...]:
    return tuple(float(v) for v in str(text).strip().strip("[]").replace(",", ";").split(";"))


def targets_from_report(path) -> Dict[str, CropTarget]:
    """Crop targets from the converter's ``conversion_report.json``: each crop record's key,
    crop and ``source_label_grid`` (or ``label_grid``: ``voxel_size_nm``, ``translation_nm``,
    ``shape``, (z, y, x) nm), the crop's own grid before resampling."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the conversion report ({exc})") from exc
    crops = report.get("crops", report)
    if isinstance(crops, Mapping):
        crops = [dict(v, key=v.get("key", k)) for k, v in crops.items() if isinstance(v, Mapping)]
    out = {}
    for rec in crops:
        if not isinstance(rec, Mapping):
            continue
        g = rec.get("source_label_grid") or rec.get("label_grid")
        if not g:
            continue
        key = str(rec.get("key") or f"{rec['dataset']}_{crop_name(rec['crop'])}")
        crop = crop_name(rec["crop"]) if "crop" in rec else _crop_of_key(key, str(path))
        out[key] = CropTarget(key, crop, Grid(g["voxel_size_nm"], g["translation_nm"], g["shape"]))
    if not out:
        raise ExportError(f"{path}: no crop records with a source_label_grid; is this the converter's "
                          "conversion_report.json?")
    return out


def targets_from_manifest(path) -> Dict[str, CropTarget]:
    """Crop targets from a CellMap ``test_crop_manifest.csv`` (header ``crop_name,dataset,
    class_label,voxel_size,translation,shape``, vectors ``[z;y;x]``): one target per crop with the
    classes listed for it."""
    path = Path(path)
    rows: Dict[str, dict] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                crop = crop_name(r["crop_name"])
                key = f"{r['dataset']}_{crop}"
                grid = Grid(_vec(r["voxel_size"]), _vec(r["translation"]),
                            tuple(int(v) for v in _vec(r["shape"])))
            except (KeyError, ValueError) as exc:
                raise ExportError(f"{path}: bad row {r} ({exc!r}); expected the columns crop_name,"
                                  "dataset,class_label,voxel_size,translation,shape") from exc
            rec = rows.setdefault(key, {"crop": crop, "grid": grid, "classes": []})
            if rec["grid"] != grid:
                raise ExportError(f"{path}: {key} lists two grids ({rec['grid'].describe()} and "
                                  f"{grid.describe()})")
            rec["classes"].append(r["class_label"])
    return {k: CropTarget(k, v["crop"], v["grid"], tuple(v["classes"])) for k, v in rows.items()}


def targets_from_datasplit(path) -> Dict[str, CropTarget]:
    """Crop targets from a CellMap ``datasplit.csv``: each row's ground-truth crop group gives the
    s0 grid of its listed classes (every class of a crop shares it)."""
    from cellmap.datasplit import read_datasplit

    out = {}
    for row in read_datasplit(str(path)):
        if not row.classes:
            raise ExportError(f"{row.where}: the row lists no class, so the crop grid is unknown")
        crop = crop_name(row.crop)
        key = f"{row.dataset}_{crop}"
        grid = read_label(join(row.crop_location, row.classes[0])).grid
        out[key] = CropTarget(key, crop, grid, tuple(row.classes))
    return out


def load_targets(source) -> Dict[str, CropTarget]:
    """Crop targets from a ``conversion_report.json``, a ``test_crop_manifest.csv`` or a
    ``datasplit.csv`` (told apart by suffix and header)."""
    p = Path(source)
    if p.is_dir() and (p / "conversion_report.json").exists():
        p = p / "conversion_report.json"
    if p.suffix == ".json":
        return targets_from_report(p)
    if p.suffix == ".csv":
        with open(p) as f:
            head = f.readline()
        if head.startswith("crop_name"):
            return targets_from_manifest(p)
        return targets_from_datasplit(p)
    raise ExportError(f"{source}: give conversion_report.json, test_crop_manifest.csv or "
                      "datasplit.csv to say where each crop lies")


def _check_overlap(src: Grid, dst: Grid, where: str) -> None:
    if src.intersection(dst).is_empty:
        raise ExportError(f"{where}: the prediction ({src.describe()}) does not overlap its crop "
                          f"({dst.describe()}); are the NIfTI affine numbers in nm?")


def _write_on_grid(out_root, crop: str, name: str, data: np.ndarray, src: Grid, dst: Grid,
                   slab_voxels: int) -> str:
    view = OnGrid(data, src, dst)
    dtype = np.uint8 if data.dtype == bool else label_dtype(int(data.max()) if data.size else 0)
    depth = max(1, slab_voxels // max(1, dst.shape[1] * dst.shape[2]))
    with LabelWriter(out_root, crop, name, dst, dtype) as w:
        for z0 in range(0, dst.shape[0], depth):
            w.write(z0, view[z0:min(dst.shape[0], z0 + depth)])
    return w.final


def export_case(nifti_path, target: CropTarget, class_names: Sequence, out_root,
                instance_classes: Optional[Sequence[str]] = None, threshold: float = 0.5,
                slab_voxels: int = 1 << 26) -> List[str]:
    """Export one prediction NIfTI onto ``target``'s crop grid in ``out_root`` (a submission
    hierarchy); returns the written array paths. Instance classes get connected-component IDs."""
    inst = instance_class_names(instance_classes)
    data, src = read_nifti(nifti_path)
    _check_overlap(src, target.grid, str(nifti_path))
    written = []
    for name, mask in class_masks(data, class_names, threshold, where=str(nifti_path)):
        if target.classes is not None and name not in target.classes:
            continue
        arr = label_components(mask)[0] if name in inst else mask
        written.append(_write_on_grid(out_root, target.crop, name, arr, src, target.grid,
                                      slab_voxels))
    return written


def export_predictions(pred_dir, targets, class_names: Sequence, out, instance_classes=None,
                       threshold: float = 0.5, make_zip: bool = True) -> Dict[str, object]:
    """Export every ``*.nii.gz`` of ``pred_dir`` whose key has a target into the hierarchy ``out``
    (``submission.zarr``), then zip it. ``targets``: a dict from :func:`load_targets` or a path
    for it. Returns {"zarr", "zip", "arrays", "skipped"} (skipped: files without a crop grid)."""
    from tqdm.auto import tqdm

    if not isinstance(targets, Mapping):
        targets = load_targets(targets)
    files = sorted(Path(pred_dir).glob("*.nii*"))
    if not files:
        raise ExportError(f"{pred_dir}: no NIfTI predictions (*.nii.gz) to export")
    arrays, skipped = [], []
    for f in tqdm(files, desc="export", disable=None):
        t = targets.get(case_key(f))
        if t is None:
            skipped.append(str(f))
            continue
        arrays += export_case(f, t, class_names, out, instance_classes, threshold)
    if not arrays:
        raise ExportError(f"{pred_dir}: none of {len(files)} predictions has a crop grid (keys "
                          f"{sorted(case_key(f) for f in files)[:5]}..., targets "
                          f"{sorted(targets)[:5]}...)")
    z = zip_submission(out) if make_zip else None
    return {"zarr": str(out), "zip": None if z is None else str(z), "arrays": arrays,
            "skipped": skipped}


def nifti_to_hierarchy(folder, class_names: Sequence, out, ignore_value: Optional[int] = None,
                       instance_classes=None, threshold: float = 0.5,
                       annotated: Optional[Mapping[str, Sequence[str]]] = None) -> str:
    """Write every NIfTI of ``folder`` as ``out/crop<ID>/<class>`` on its own NIfTI grid, to score
    a NIfTI folder pair with :func:`cellmap.evaluate.evaluate_hierarchies`. Voxels equal to
    ``ignore_value`` in a label map become ``<class>_mask`` zeros (not scored); ``annotated``
    ({case key: class names}) limits each case to its annotated classes (the others are unknown)."""
    inst = instance_class_names(instance_classes)
    files = sorted(Path(folder).glob("*.nii*"))
    if not files:
        raise ExportError(f"{folder}: no NIfTI files")
    for f in files:
        key = case_key(f)
        crop = _crop_of_key(key, str(f))
        data, grid = read_nifti(f)
        known = None
        if ignore_value is not None and data.ndim == 3:
            known = data != ignore_value
        for name, mask in class_masks(data, class_names, threshold, where=str(f)):
            if annotated is not None and name not in annotated.get(key, ()):
                continue
            if known is not None:
                mask = mask & known
            arr = label_components(mask)[0] if name in inst else mask
            _write_on_grid(out, crop, name, arr, grid, grid, 1 << 26)
            if known is not None and not known.all():
                _write_on_grid(out, crop, f"{name}_mask", known, grid, grid, 1 << 26)
    return str(out)


def _user_errors(fn):
    """Re-raise cellmap's user errors as :class:`ExportError` (an Auto3DSegError, which the
    run_auto3dseg CLI prints as one message)."""
    import functools

    from cellmap.errors import CellMapError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CellMapError as err:
            if isinstance(err, Auto3DSegError):
                raise
            raise ExportError(str(err)) from err

    return wrapper


def _read_datalist(datalist) -> dict:
    if datalist is None:
        raise ExportError("scoring or exporting NIfTI needs the datalist.json the model was trained "
                          "on (its class_names); pass --datalist")
    path = Path(datalist)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: cannot read the datalist ({exc})") from exc


def _annotated_by_key(dl: dict) -> Dict[str, List[str]]:
    names = _names(dl.get("class_names", []))
    out = {}
    for item in dl.get("training", []):
        if "label" in item and "annotated" in item:
            out[case_key(item["label"])] = decode_bitmask(names, item["annotated"])
    return out


def _is_hierarchy(path: Path) -> bool:
    return path.is_dir() and (path / ".zgroup").exists()


@_user_errors
def evaluate_paths(truth, prediction, out, datalist=None, classes=None, crops=None,
                   instance_classes=None, config=None) -> Dict[str, Path]:
    """Score ``prediction`` against ``truth`` and write ``out/scores.{csv,md,png}``.

    Each side is a zarr hierarchy ``crop<ID>/<class>`` (arrays with ``voxel_size`` and
    ``translation``, as CellMap's evaluator truth and submissions; the truth may also be a list
    of hierarchies or a CellMap ``datasplit.csv`` naming crop groups) or a folder of NIfTI files
    named ``<dataset>_crop<ID>...``; NIfTI sides are first written as hierarchies on their own
    grids under ``out/hierarchies/`` using the datalist's ``class_names`` (truth: its ignore value
    is not scored, and only the classes its ``annotated`` bitmask names). Returns the report paths.
    """
    from cellmap.evaluate import ScoringConfig, evaluate_hierarchies, write_report

    out = Path(out)
    sides = {}
    for role, given in (("truth", truth), ("prediction", prediction)):
        if role == "truth" and (isinstance(given, (list, tuple)) or str(given).endswith(".csv")):
            sides[role] = given  # several hierarchies, or a datasplit.csv naming the crop groups
            continue
        src = Path(given)
        if _is_hierarchy(src):
            sides[role] = src
            continue
        if not src.is_dir() or not any(src.glob("*.nii*")):
            raise ExportError(f"--{role} {src}: neither a zarr hierarchy (crop<ID>/<class> with "
                              ".zgroup) nor a folder of NIfTI files")
        dl = _read_datalist(datalist)
        dest = out / "hierarchies" / f"{role}.zarr"
        if role == "truth":
            nifti_to_hierarchy(src, dl["class_names"], dest, dl.get("ignore_value", 255),
                               instance_classes, annotated=_annotated_by_key(dl) or None)
        else:
            nifti_to_hierarchy(src, dl["class_names"], dest, None, instance_classes)
        sides[role] = dest
    if isinstance(classes, str):
        classes = [c for c in re.split(r"[,\s]+", classes) if c]
    scores = evaluate_hierarchies(sides["truth"], sides["prediction"], classes=classes,
                                  crops=crops, instance_classes=instance_classes,
                                  config=config or ScoringConfig())
    name = Path(str(truth[0] if isinstance(truth, (list, tuple)) else truth)).name
    return write_report(scores, out, title=f"{Path(prediction).name} vs {name}")


@_user_errors
def export_for_run(pred_dir, datalist, grids=None, out=None, instance_classes=None):
    """The predict mode's export: when crop grids are known (``grids`` = a conversion report, test
    crop manifest or datasplit; default the ``conversion_report.json`` beside the datalist),
    write ``out`` (default ``<pred_dir>/submission.zarr``) and its zip. Returns the result of
    :func:`export_predictions`, or None when no grid source is known or matches."""
    if grids is None:
        guess = Path(datalist).parent / "conversion_report.json" if datalist else None
        if guess is None or not guess.exists():
            return None
        grids = guess
    targets = load_targets(grids)
    files = sorted(Path(pred_dir).glob("*.nii*"))
    if not any(case_key(f) in targets for f in files):
        return None
    dl = _read_datalist(datalist)
    out = Path(out) if out is not None else Path(pred_dir) / "submission.zarr"
    return export_predictions(pred_dir, targets, dl["class_names"], out, instance_classes)
