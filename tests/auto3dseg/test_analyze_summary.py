"""The corrected per-class summary equals label statistics computed independently from the label files."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
import yaml

from auto3dseg.analyze import analyze


@pytest.fixture(scope="module")
def analysed(synthetic_datalist, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("work"))
    paths = analyze(synthetic_datalist, work, workers=2, progress=False)
    return synthetic_datalist, work, paths


def _independent(datalist_path):
    """Per label file: {value: percent of voxels}, straight from nibabel + numpy."""
    dl = json.load(open(datalist_path))
    root = os.path.dirname(datalist_path)
    out = []
    for item in dl["training"]:
        lab = np.asarray(nib.load(os.path.join(root, item["label"])).dataobj)
        values, counts = np.unique(lab, return_counts=True)
        out.append(({int(v): 100.0 * c / lab.size for v, c in zip(values, counts)}, item["annotated"]))
    return dl, out


def test_class_summary_matches_label_files(analysed):
    datalist, work, paths = analysed
    summary = yaml.safe_load(open(paths["datastats_by_class"]))
    dl, cases = _independent(datalist)
    assert summary["n_cases"] == len(cases)
    for k, cls in enumerate(dl["class_names"]):
        got = next(c for c in summary["classes"] if c["name"] == cls["name"])
        present = [sum(p.get(v, 0.0) for v in cls["index"]) for p, _ in cases]
        present = [p for p in present if p > 0]
        assert got["cases_present"] == len(present)
        assert got["cases_annotated"] == sum(1 for _, a in cases if a >> k & 1)
        assert got["percent_when_present"]["mean"] == pytest.approx(np.mean(present), rel=1e-5)
        assert got["percent_when_present"]["max"] == pytest.approx(np.max(present), rel=1e-5)
        assert got["percent_when_present"]["median"] == pytest.approx(np.median(present), rel=1e-5)
    # the ignore value is reported apart, never as a class or label value
    assert 255 not in summary["by_label_value"]
    ign = [p[255] for p, _ in cases if 255 in p]
    assert summary["ignore"]["cases_present"] == len(ign) == 1
    assert summary["ignore"]["percent_when_present"]["mean"] == pytest.approx(ign[0], rel=1e-5)
    for v, d in summary["by_label_value"].items():
        vals = [p[v] for p, _ in cases if v in p]
        assert d["cases_present"] == len(vals)
        assert d["percent_when_present"]["mean"] == pytest.approx(np.mean(vals), rel=1e-5)


def test_monai_summary_files_and_report(analysed):
    datalist, work, paths = analysed
    stats = yaml.safe_load(open(paths["datastats"]))
    assert stats["stats_by_cases"] == []  # as DataAnalyzer writes it
    assert stats["stats_summary"]["n_cases"] == 4
    assert stats["stats_summary"]["label_stats"]["labels"] == [0, 1, 2, 3, 255]
    by_case = yaml.safe_load(open(paths["datastats_by_case"]))
    assert len(by_case["stats_by_cases"]) == 4
    report = open(paths["report"]).read()
    for name in ("ecs", "mito_mem", "mito_lum"):
        assert f"| {name} |" in report
    for png in ("class_coverage.png", "class_foreground.png", "shapes.png", "spacing.png", "intensity.png"):
        with open(os.path.join(work, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", png
        assert f"]({png})" in report


def test_parallel_workers_give_the_same_cases(analysed, tmp_path):
    datalist, work, paths = analysed
    serial = analyze(datalist, str(tmp_path), workers=1, report=False, progress=False)
    a = yaml.safe_load(open(paths["datastats_by_case"]))["stats_by_cases"]
    b = yaml.safe_load(open(serial["datastats_by_case"]))["stats_by_cases"]
    assert a == b


def test_analysis_is_current_until_a_case_changes(analysed):
    from auto3dseg.analyze import analysis_is_current
    from auto3dseg.rundata import load_run_datalist

    datalist, work, paths = analysed
    assert analysis_is_current(datalist, work)
    label = load_run_datalist(datalist).cases[1].label
    later = os.path.getmtime(paths["datastats"]) + 10
    os.utime(label, (later, later))
    assert not analysis_is_current(datalist, work)
