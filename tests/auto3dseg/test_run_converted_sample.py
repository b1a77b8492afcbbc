"""The embedded CellMap sample, converted by the converter, through analyze and the tiny-template pipeline."""

import json
import os

import nibabel as nib
import numpy as np
import pytest
import yaml

from auto3dseg.conversion import convert_datasplit
from auto3dseg.run_auto3dseg import run
from cellmap.sample import build_sample


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    datasplit = build_sample(str(root / "data"), quiet=True)
    convert_datasplit(datasplit, str(root / "data" / "nifti"), progress=False)
    return root, str(root / "data" / "nifti" / "datalist.json")


def test_converted_sample_analyze_train_predict(converted, tiny_templates):
    root, datalist = converted
    work = str(root / "work_dir")
    config = root / "auto3dseg.yaml"
    config.write_text(yaml.safe_dump({"input": {"roi_size": [16, 16, 16]}}))
    common = dict(datalist=datalist, work_dir=work, config=str(config))

    paths = run(mode="analyze", **common)
    dl = json.load(open(datalist))
    summary = yaml.safe_load(open(paths["datastats_by_class"]))
    # independent oracle: the converted label files read with nibabel
    labels = [np.asarray(nib.load(os.path.join(os.path.dirname(datalist), t["label"])).dataobj) for t in dl["training"]]
    assert summary["n_cases"] == len(labels)
    for k, cls in enumerate(dl["class_names"]):
        got = next(c for c in summary["classes"] if c["name"] == cls["name"])
        pct = [100.0 * np.isin(lab, cls["index"]).mean() for lab in labels]
        assert got["cases_present"] == sum(p > 0 for p in pct), cls["name"]
        assert got["cases_annotated"] == sum(t["annotated"] >> k & 1 for t in dl["training"]), cls["name"]
        if got["cases_present"]:
            assert got["percent_when_present"]["max"] == pytest.approx(max(pct), rel=1e-5), cls["name"]
    assert dl["ignore_value"] not in summary["by_label_value"]

    full = run(mode="full", templates=tiny_templates, algos="tinyseg", num_epochs=1, num_fold=1, **common)
    assert full["analyze"] is None  # the analysis above is current: kept, not redone
    scores = full["train"]
    assert sorted(scores) == ["tinyseg_0"]  # --num_fold 1: fold 0 validates, every other case trains
    images = os.path.join(os.path.dirname(datalist), "images")
    outs = run(mode="predict", input=images, output=str(root / "preds"), **common)
    assert len(outs) == len(os.listdir(images))
    for out in outs:
        src = nib.load(os.path.join(images, os.path.basename(out).replace(".nii.gz", "_0000.nii.gz")))
        pred = nib.load(out)
        assert pred.shape == src.shape + (len(dl["class_names"]),)
        np.testing.assert_allclose(pred.affine, src.affine)
