"""The analyze step: datastats.yaml + datastats_by_case.yaml (DataAnalyzer format) and a per-class summary.

Two engines write the same files:
- ``ours`` (default): :func:`auto3dseg.casestats.case_stats` per case, streamed in slabs, in ``workers``
  parallel processes; the dataset summary is MONAI's own ``SegSummarizer.summarize`` over those cases, so
  ``datastats.yaml`` is what DataAnalyzer would write.
- ``monai``: plain ``monai.apps.auto3dseg.DataAnalyzer`` (whole cases in float32; the reference).

Either way a case that cannot be analysed fails the run with the case named (DataAnalyzer on its own drops
such cases silently). MONAI's summary indexes per-label statistics by label *value* as if it were a list
position, which mixes classes when cases hold different label sets; ``datastats_by_class.yaml`` regroups the
per-case numbers by label value instead (ignore value reported apart, not as a class).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import yaml
from tqdm import tqdm

from cellmap.atomic import write_yaml_atomic
from auto3dseg.casestats import DEFAULT_SLAB_VOXELS, CaseStatsError, case_stats
from auto3dseg.errors import Auto3DSegError
from auto3dseg.rundata import RunDatalist, load_run_datalist

__all__ = [
    "AnalysisError",
    "ENGINES",
    "analyze",
    "analysis_is_current",
    "analyze_cases",
    "summarize_cases",
    "class_summary",
    "DATASTATS",
    "DATASTATS_BY_CASE",
    "DATASTATS_BY_CLASS",
]

logger = logging.getLogger(__name__)

ENGINES = ("ours", "monai")
DATASTATS = "datastats.yaml"
DATASTATS_BY_CASE = "datastats_by_case.yaml"
DATASTATS_BY_CLASS = "datastats_by_class.yaml"


class AnalysisError(Auto3DSegError):
    """One or more cases could not be analysed; the message lists each case and the fix."""


def _one(args):
    image, label, slab = args
    try:
        return image, case_stats(image, label, slab_voxels=slab), None
    except CaseStatsError as err:
        return image, None, str(err)


def analyze_cases(
    cases, workers: int = 1, slab_voxels: int = DEFAULT_SLAB_VOXELS, progress: bool = True
) -> list:
    """Per-case DataAnalyzer statistics for ``cases`` ((image, label) absolute paths), in input order.

    Args:
        workers: parallel processes (forked; each holds two slabs, about 50 MB at the default slab size).
        slab_voxels: voxels per slab read.

    Raises:
        AnalysisError: listing every case that failed, with the reason and the fix.
    """
    jobs = [(img, lab, slab_voxels) for img, lab in cases]
    results, errors = {}, []
    bar = tqdm(total=len(jobs), desc="analyze", unit="case", disable=not progress)
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            image, rep, err = _one(job)
            results[image] = rep
            if err:
                errors.append(err)
            bar.update()
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(_one, job) for job in jobs]):
                image, rep, err = fut.result()
                results[image] = rep
                if err:
                    errors.append(err)
                bar.update()
    bar.close()
    if errors:
        raise AnalysisError(
            f"{len(errors)} of {len(jobs)} case(s) cannot be analysed (MONAI's DataAnalyzer would drop them "
            "silently):\n  " + "\n  ".join(sorted(errors))
        )
    return [results[img] for img, _, _ in jobs]


def summarize_cases(by_case: list) -> dict:
    """MONAI's ``stats_summary`` of by-case reports (``SegSummarizer.summarize`` plus ``n_cases``)."""
    from monai.auto3dseg import SegSummarizer  # torch import: only here

    summarizer = SegSummarizer("image", "label", average=True, do_ccp=False, hist_bins=0)
    summary = summarizer.summarize(by_case)
    summary["n_cases"] = len(by_case)
    return _plain(summary)


def _plain(obj):
    """numpy/torch scalars and arrays to plain Python for YAML."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _plain(obj.tolist())
    return obj


def _spread(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def class_summary(by_case: list, datalist: RunDatalist) -> dict:
    """Per-label-value and per-class statistics regrouped from by-case reports (the corrected summary).

    Percentages are of all voxels of a case (``foreground_percentage`` x 100). For each label value: in how
    many cases it occurs, its percentage over those cases (mean/median/min/max) and the mean image intensity
    under it (mean over those cases of the per-case mean). For each class of ``class_names`` (values summed):
    the same, plus in how many cases the class is annotated (from the ``annotated`` bitmask). The ignore value
    is reported under ``ignore``, never as a class.
    """
    ignore = datalist.ignore_value
    cases_by_image = {c.image: c for c in datalist.cases}
    per_value: dict = {}
    per_case = []
    for rep in by_case:
        ls = rep["label_stats"]
        pct = {int(v): 100.0 * float(d["foreground_percentage"]) for v, d in zip(ls["labels"], ls["label"])}
        mean_int = {int(v): float(d["image_intensity"][0]["mean"]) for v, d in zip(ls["labels"], ls["label"])}
        case = cases_by_image.get(os.path.normpath(rep["image_filepath"]))
        per_case.append(
            {
                "case": case.name if case else os.path.basename(rep["label_filepath"]),
                "fold": case.fold if case else None,
                "annotated": case.annotated if case else None,
                "shape": rep["image_stats"]["shape"][0],
                "spacing": rep["image_stats"]["spacing"],
                "intensity_mean": rep["image_stats"]["intensity"][0]["mean"],
                "intensity_p00_5": rep["image_stats"]["intensity"][0]["percentile_00_5"],
                "intensity_p99_5": rep["image_stats"]["intensity"][0]["percentile_99_5"],
                "percent_by_value": pct,
            }
        )
        for v, p in pct.items():
            per_value.setdefault(v, {"pct": [], "int": []})
            per_value[v]["pct"].append(p)
            per_value[v]["int"].append(mean_int[v])
    by_value = {
        v: {
            "cases_present": len(d["pct"]),
            "percent_when_present": _spread(d["pct"]),
            "intensity_mean_when_present": _spread(d["int"])["mean"],
        }
        for v, d in sorted(per_value.items())
        if v != ignore
    }
    classes = []
    for k, c in enumerate(datalist.class_names):
        values = [int(v) for v in c.get("index", [])]
        present, annotated = [], 0
        for row in per_case:
            total = sum(row["percent_by_value"].get(v, 0.0) for v in values)
            if total > 0:
                present.append(total)
            if row["annotated"] is not None and int(row["annotated"]) >> k & 1:
                annotated += 1
        classes.append(
            {
                "name": c["name"],
                "values": values,
                "cases_annotated": annotated if any(r["annotated"] is not None for r in per_case) else None,
                "cases_present": len(present),
                "percent_when_present": _spread(present),
            }
        )
    ign = per_value.get(ignore, {"pct": []}) if ignore is not None else {"pct": []}
    return {
        "schema_version": 1,
        "n_cases": len(by_case),
        "ignore_value": ignore,
        "note": "regrouped by label value from datastats_by_case.yaml; MONAI's stats_summary#label_stats#label "
        "indexes per-case lists by label value and mixes classes when cases hold different label sets",
        "classes": classes,
        "by_label_value": by_value,
        "ignore": {"cases_present": len(ign["pct"]), "percent_when_present": _spread(ign["pct"])},
        "cases": per_case,
    }


def _run_monai(datalist: RunDatalist, work_dir: str, workers: int) -> list:
    """Plain DataAnalyzer; cases it drops fail the run by name."""
    from monai.apps.auto3dseg import DataAnalyzer

    out = os.path.join(work_dir, DATASTATS)
    analyzer = DataAnalyzer(
        datalist=datalist.raw, dataroot=datalist.dataroot, output_path=out, device="cpu", worker=workers, do_ccp=False
    )
    result = analyzer.get_all_case_stats()
    seen = {os.path.normpath(c["image_filepath"]) for c in result["stats_by_cases"]}
    dropped = [c.image for c in datalist.cases if os.path.normpath(c.image) not in seen]
    if dropped:
        raise AnalysisError(
            f"MONAI DataAnalyzer dropped {len(dropped)} case(s) (an exception while analysing them, e.g. an "
            "all-zero image):\n  " + "\n  ".join(dropped) + "\nfix or remove them from the datalist"
        )
    return _plain(result["stats_by_cases"])


def analyze(
    datalist,
    work_dir,
    workers: int = 1,
    engine: str = "ours",
    slab_voxels: int = DEFAULT_SLAB_VOXELS,
    report: bool = True,
    progress: bool = True,
) -> dict:
    """Analyse every training case of ``datalist`` into ``work_dir``.

    Writes ``datastats.yaml`` (``stats_summary``, empty ``stats_by_cases``, as DataAnalyzer),
    ``datastats_by_case.yaml``, ``datastats_by_class.yaml`` and, with ``report``, ``datastats_report.md`` plus
    PNG plots. Returns ``{name: path}`` of the files written.

    Python: ``analyze("data/nifti/datalist.json", "data/work_dir", workers=2)``;
    shell: ``run_auto3dseg --mode analyze --workers 2``.
    """
    if engine not in ENGINES:
        raise Auto3DSegError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    dl = datalist if isinstance(datalist, RunDatalist) else load_run_datalist(datalist)
    work_dir = os.path.abspath(os.fspath(work_dir))
    os.makedirs(work_dir, exist_ok=True)
    start = time.time()
    if engine == "monai":
        by_case = _run_monai(dl, work_dir, workers)
    else:
        by_case = analyze_cases([(c.image, c.label) for c in dl.cases], workers, slab_voxels, progress)
    summary = summarize_cases(by_case)
    paths = {
        "datastats": str(write_yaml_atomic(os.path.join(work_dir, DATASTATS), {"stats_summary": summary, "stats_by_cases": []})),
        "datastats_by_case": str(
            write_yaml_atomic(
                os.path.join(work_dir, DATASTATS_BY_CASE), {"stats_summary": summary, "stats_by_cases": by_case}
            )
        ),
        "datastats_by_class": str(
            write_yaml_atomic(os.path.join(work_dir, DATASTATS_BY_CLASS), class_summary(by_case, dl))
        ),
    }
    logger.info("analysed %d case(s) in %.1f s", len(by_case), time.time() - start)
    if report:
        from auto3dseg.datastats_report import write_report

        paths["report"] = str(write_report(work_dir))
    return paths


def analysis_is_current(datalist, work_dir) -> bool:
    """True when ``work_dir`` holds an analysis of exactly the datalist's cases, newer than every input file."""
    dl = datalist if isinstance(datalist, RunDatalist) else load_run_datalist(datalist)
    files = [os.path.join(work_dir, n) for n in (DATASTATS, DATASTATS_BY_CASE, DATASTATS_BY_CLASS)]
    if not all(os.path.isfile(f) for f in files):
        return False
    newest_input = max(os.path.getmtime(p) for c in dl.cases for p in (c.image, c.label))
    if min(os.path.getmtime(f) for f in files) < max(newest_input, os.path.getmtime(dl.path)):
        return False
    try:
        done = {os.path.normpath(c["image_filepath"]) for c in load_by_case(work_dir)}
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return False
    return done == {os.path.normpath(c.image) for c in dl.cases}


def load_by_case(work_dir) -> list:
    """``stats_by_cases`` of ``work_dir/datastats_by_case.yaml``."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(os.path.join(work_dir, DATASTATS_BY_CASE)) as fh:
        return yaml.load(fh, Loader=loader)["stats_by_cases"]
