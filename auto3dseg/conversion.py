"""Convert a CellMap datasplit to NIfTI pairs, datalist.json and the conversion report (the library behind the CLI).

    from auto3dseg.conversion import convert_datasplit
    report = convert_datasplit("datasplit.csv", "data/nifti", target_spacing=(8, 8, 8))

Steps: read the datasplit -> resolve the class set -> plan every crop (annotation status,
grids, raw level, slabs) -> convert (or only measure, ``dry_run``) -> data check -> verdicts
-> folds -> ``datalist.json`` -> ``conversion_report.{json,md}`` + one picture per crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from cellmap.classes import get_class, load_class_set

from auto3dseg.conversion_report import save_picture, write_report
from auto3dseg.convert import convert_all, image_name, label_name
from auto3dseg.convert_plan import DEFAULT_SLAB_VOXELS, CropPlan, plan_crop
from auto3dseg.crop_sources import CropRow, crop_sources, read_crop_rows
from auto3dseg.datacheck import CheckThresholds, CropStats, check_crop, size_outliers
from auto3dseg.datalist import FOLD_BY, DatalistError, annotated_bitmask, assign_folds, build_datalist, write_datalist
from auto3dseg.errors import Auto3DSegError
from auto3dseg.labels import LabelEncoding

__all__ = ["DEFAULT_TARGET_SPACING", "ConversionError", "resolve_classes", "convert_datasplit"]

#: Default output spacing (z, y, x) in nm: 8 nm isotropic. CellMap raw s0 is 2-8 nm (with
#: anisotropic z such as 5.24 nm); one common, isotropic spacing keeps Auto3DSeg's analysis and
#: patch sizes meaningful across datasets, and 8 nm is where most organelles are still resolved.
DEFAULT_TARGET_SPACING = (8.0, 8.0, 8.0)


class ConversionError(Auto3DSegError):
    """Bad converter options or a datasplit the converter cannot use."""


def resolve_classes(spec, rows: Sequence[CropRow]) -> LabelEncoding:
    """The label encoding for ``--classes``: a set name, a YAML path, a list/comma string, or None
    (the classes named in the datasplit rows, in CellMap catalogue id order)."""
    precedence = None
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        names = sorted({c for r in rows for c in r.classes}, key=lambda n: get_class(n).id)
        if not names:
            raise ConversionError("the datasplit rows list no classes; pass --classes (e.g. organelles14)")
        cset = load_class_set(list(names))
    else:
        cset = load_class_set(spec)
        path = _class_set_file(spec)
        if path is not None:
            doc = yaml.safe_load(path.read_text()) or {}
            precedence = doc.get("precedence")
    atoms = {n: get_class(n).members for n in cset.classes}
    return LabelEncoding.build(cset.classes, atoms, precedence)


def _class_set_file(spec) -> Optional[Path]:
    from cellmap.classes import CLASS_SETS_DIR

    if isinstance(spec, (list, tuple)):
        return None
    p = Path(str(spec))
    if p.is_file():
        return p
    named = CLASS_SETS_DIR / f"{spec}.yaml"
    return named if named.is_file() else None


def _select(rows: List[CropRow], datasets, crops, max_crops: int) -> List[CropRow]:
    if datasets:
        want = set(datasets)
        rows = [r for r in rows if r.dataset in want]
    if crops:
        want = {str(c) if str(c).startswith("crop") else f"crop{c}" for c in crops}
        rows = [r for r in rows if r.crop in want]
    if max_crops and max_crops > 0:
        rows = rows[:int(max_crops)]
    return rows


def convert_datasplit(datasplit="datasplit.csv", output_dir="data/nifti", target_spacing=DEFAULT_TARGET_SPACING,
                      scale: str = "auto", classes=None, datasets: Optional[Sequence[str]] = None,
                      crops: Optional[Sequence] = None, max_crops: int = 0, workers: int = 1,
                      folds: Optional[int] = None, fold_by: str = "dataset", seed: int = 0, force: bool = False,
                      dry_run: bool = False, keep_flagged: bool = False, executor=None,
                      thresholds: CheckThresholds = CheckThresholds(), slab_voxels: int = DEFAULT_SLAB_VOXELS,
                      progress: bool = True, threads: int = 1) -> dict:
    """Convert the crops of ``datasplit`` into ``output_dir``; returns the report dict.

    ``target_spacing``: (z, y, x) nm. ``scale``: "auto" or a raw level such as "s1". ``crops``:
    ids as ints or "cropN" strings. ``folds``: number of folds (None: min(5, number of groups)).
    Writes ``images/``, ``labels/``, ``datalist.json``, ``conversion_report.{json,md}`` and
    ``pictures/``; with ``dry_run`` only the report and pictures.
    """
    if fold_by not in FOLD_BY:
        raise ConversionError(f"--fold_by {fold_by!r}: choose one of {list(FOLD_BY)}")
    if isinstance(target_spacing, (int, float)):
        target_spacing = (target_spacing,) * 3
    spacing = tuple(float(s) for s in target_spacing)
    if len(spacing) != 3 or any(s <= 0 for s in spacing):
        raise ConversionError(f"--target_spacing needs three positive numbers Z Y X in nm, got {target_spacing!r}")
    if not (str(scale) == "auto" or (str(scale).startswith("s") and str(scale)[1:].isdigit())):
        raise ConversionError(f"--scale {scale!r}: use 'auto' or a raw level name such as s0, s1")
    datasplit = Path(datasplit)
    output_dir = Path(output_dir)
    rows = _select(read_crop_rows(datasplit), datasets, crops, max_crops)
    if not rows:
        raise ConversionError(f"{datasplit}: no crop left after --datasets {datasets} --crops {crops}; "
                              "check the names (datasets look like jrc_cos7-1a, crops like 7 or crop7)")
    enc = resolve_classes(classes, rows)
    params = {"target_spacing_nm": list(spacing), "scale": str(scale), "encoding": enc.to_dict()}

    plans: List[CropPlan] = []
    records: Dict[str, dict] = {}
    for row in rows:
        try:
            sources, grid = crop_sources(row, enc.names)
            plans.append(plan_crop(row.key, row.dataset, row.crop, row.usage, row.raw_group, sources, grid,
                                   spacing, scale, slab_voxels))
        except Auto3DSegError as exc:
            records[row.key] = _failed_row(row, exc)
        except Exception as exc:  # cellmap errors and friends: reported per crop
            records[row.key] = _failed_row(row, exc)

    results = convert_all(plans, enc, output_dir, workers=workers, dry_run=dry_run, force=force,
                          params=params, executor=executor, progress=progress, threads=threads)
    slices_by_key = {}
    for key, (rec, slices) in results.items():
        records[key] = rec
        slices_by_key[key] = slices

    # data check
    shapes = {p.key: p.out_grid.shape for p in plans if "error" not in records.get(p.key, {})}
    outliers = size_outliers(shapes, thresholds)
    ordered = [records[r.key] for r in rows if r.key in records]
    for rec in ordered:
        if "error" in rec:
            rec["flags"] = [{"code": "conversion_error", "message": rec["error"], "fix": "see the message"}]
            rec["verdict"] = "excluded: conversion_error"
            continue
        stats = CropStats.from_dict(rec["stats"])
        flags = check_crop(f"{rec['dataset']}/{rec['crop']}", rec["crop"], stats, rec["annotated"],
                           rec.get("raw_missing_chunk_fraction", 0.0), rec["usage"] != "test", thresholds,
                           rec.get("raw_complete_levels"))
        if rec["key"] in outliers:
            flags.append(outliers[rec["key"]])
        rec["flags"] = [f.__dict__ for f in flags]
        rec["verdict"] = "kept" if (not flags or keep_flagged) else "excluded: " + ", ".join(f.code for f in flags)
        rec["annotated_bitmask"] = annotated_bitmask(enc.names, rec["annotated"])

    # pictures
    pic_dir = output_dir / "pictures"
    for rec in ordered:
        sl = slices_by_key.get(rec["key"])
        pic = pic_dir / f"{rec['key']}.png"
        if sl is not None:
            save_picture(pic, sl, rec["output"]["voxel_size_nm"], f"{rec['key']} [{rec['verdict']}]",
                         enc.n_classes, enc.ignore_value)
        if pic.exists():
            rec["picture"] = f"pictures/{pic.name}"

    # folds + datalist
    train = [r for r in ordered if r["verdict"] == "kept" and r["usage"] != "test"]
    test = [r for r in ordered if r["verdict"] == "kept" and r["usage"] == "test"]
    groups = [r["dataset"] if fold_by == "dataset" else r["key"] for r in train]
    n_groups = len(set(groups))
    k = int(folds) if folds else max(2, min(5, n_groups))
    fold_error = None
    try:
        fold_of = assign_folds([r["key"] for r in train], groups, k, seed)
    except DatalistError as exc:
        fold_error, fold_of = exc, {}
    for r in train:
        r["fold"] = fold_of.get(r["key"])
    report = {
        "output_dir": str(output_dir),
        "parameters": {"datasplit": str(datasplit), "target_spacing_nm": list(spacing), "scale": str(scale),
                       "classes": list(enc.names), "folds": k, "fold_by": fold_by, "seed": int(seed),
                       "dry_run": bool(dry_run), "keep_flagged": bool(keep_flagged), "force": bool(force),
                       "workers": int(workers), "thresholds": thresholds.__dict__},
        "encoding": enc.to_dict(),
        "summary": {"crops": len(ordered), "kept": len(train) + len(test),
                    "excluded": len(ordered) - len(train) - len(test),
                    "skipped_unchanged": sum(1 for r in ordered if r.get("skipped")),
                    "fold_error": str(fold_error) if fold_error else None},
        "crops": ordered,
    }
    paths = write_report(output_dir, report)
    report["report_paths"] = {k: str(v) for k, v in paths.items()}
    if fold_error is not None and not dry_run:
        raise ConversionError(f"{fold_error} (report: {paths['md']})")
    if not dry_run:
        items = [{"image": image_name(r["key"]), "label": label_name(r["key"]), "fold": r["fold"],
                  "annotated": r["annotated_bitmask"]} for r in train]
        dl = build_datalist(enc.class_names(), items, [{"image": image_name(r["key"])} for r in test],
                            ignore_value=enc.ignore_value,
                            description=f"CellMap crops from {datasplit.name} at {list(spacing)} nm (z, y, x)")
        report["datalist"] = str(write_datalist(output_dir / "datalist.json", dl))
    return report


def _failed_row(row: CropRow, exc: BaseException) -> dict:
    return {"key": row.key, "dataset": row.dataset, "crop": row.crop, "usage": row.usage,
            "error": f"{type(exc).__name__}: {exc}", "classes": {}, "annotated": []}
