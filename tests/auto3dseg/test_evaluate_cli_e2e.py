"""On the embedded sample: a CellMap crop -> converter NIfTI -> export lands on the crop's own world grid;
and end to end: convert -> tiny-template training -> predict (+ submission.zarr on the crops' own grids)
-> evaluate against the sample's ground truth through datasplit.csv."""

import csv
import json
import math
import os
import zipfile

import numpy as np
import pytest
import yaml

from auto3dseg.conversion import convert_datasplit
from auto3dseg.run_auto3dseg import run
from cellmap.submission import read_hierarchy, read_truth


@pytest.fixture(scope="module")
def sample_split(tmp_path_factory):
    from cellmap.sample import build_sample

    data = tmp_path_factory.mktemp("sample") / "data"
    build_sample(str(data), quiet=True)
    return str(data / "datasplit.csv")


def test_converter_round_trip_lands_on_crop_grid(sample_split, tmp_path):
    """crop1 (2.62 x 2 x 2 nm, translation with the 0.5 fraction) converted at its own voxel size,
    its label NIfTI exported back: same world grid, and ecs (no overlapping class) voxel for voxel."""
    from auto3dseg.export import export_predictions

    truth = read_truth(sample_split)["crop1"]
    grid = truth["ecs"].grid
    nifti = tmp_path / "nifti"
    convert_datasplit(sample_split, str(nifti), target_spacing=grid.voxel_size_nm, crops=[1, 5],
                      progress=False)
    dl = json.loads((nifti / "datalist.json").read_text())
    export_predictions(nifti / "labels", nifti / "conversion_report.json", dl["class_names"],
                       tmp_path / "back.zarr", make_zip=False)
    back = read_hierarchy(tmp_path / "back.zarr")["crop1"]
    assert back["ecs"].grid == grid
    np.testing.assert_array_equal(np.asarray(back["ecs"].array[:]) > 0,
                                  np.asarray(truth["ecs"].array[:]) > 0)


@pytest.mark.slow
def test_sample_predict_export_evaluate(sample_split, tmp_path):
    from synth_nifti import TINY_TEMPLATES

    split = sample_split
    nifti = tmp_path / "nifti"
    convert_datasplit(split, str(nifti), target_spacing=(16.0, 16.0, 16.0), crops=[1, 5], progress=False)
    datalist = str(nifti / "datalist.json")
    config = tmp_path / "auto3dseg.yaml"
    config.write_text(yaml.safe_dump({"input": {"roi_size": [8, 8, 8]}}))
    common = dict(datalist=datalist, work_dir=str(tmp_path / "work"), config=str(config),
                  templates=TINY_TEMPLATES, algos="tinyseg")
    run(mode="analyze", **common)
    run(mode="generate", num_fold=1, **common)
    run(mode="train", num_epochs=1, **common)
    preds = tmp_path / "preds"
    run(mode="predict", input=str(nifti / "images"), output=str(preds), **common)

    # the submission lands on each crop's own grid (from conversion_report.json beside the datalist)
    truth = read_truth(split)
    sub = read_hierarchy(preds / "submission.zarr")
    names = [c["name"] for c in json.loads((nifti / "datalist.json").read_text())["class_names"]]
    assert set(sub) == {"crop1", "crop5"}
    for crop, labels in sub.items():
        assert set(labels) == set(names)
        for name, la in labels.items():
            ref = next(iter(truth[crop].values())).grid
            assert la.grid == ref, f"{crop}/{name}"
            if name in ("mito", "ves", "endo", "nuc"):
                assert str(la.array.dtype).startswith("uint")
    assert "crop1/mito/.zarray" in zipfile.ZipFile(preds / "submission.zip").namelist()

    # only the two converted crops: a truth crop absent from the submission would count as missing
    paths = run(mode="evaluate", truth=split, prediction=str(preds / "submission.zarr"),
                out=str(tmp_path / "scores"), crops="1,5", **common)
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    crop_rows = [r for r in rows if r["level"] == "crop"]
    # every class the crop's truth annotates and the model predicts is scored, nothing else
    expected = {(c, n) for c in ("crop1", "crop5") for n in names if n in truth[c]}
    assert {(r["crop"], r["class"]) for r in crop_rows} == expected
    summary = {r["class"]: float(r["score"]) for r in rows if r["level"] == "summary"}
    assert 0.0 <= summary["overall"] <= 1.0
    assert summary["overall"] == pytest.approx(
        math.sqrt(summary["instance_mean"] * summary["semantic_mean"]))
    assert os.path.getsize(paths["png"]) > 1000
