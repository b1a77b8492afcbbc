"""run_auto3dseg --mode evaluate on zarr hierarchies and on a NIfTI folder pair, with known scores."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from auto3dseg.errors import Auto3DSegError
from auto3dseg.nifti import nifti_affine
from auto3dseg.run_auto3dseg import run
from cellmap.grid import Grid
from cellmap.submission import write_label

REPO = Path(__file__).resolve().parents[2]
GRID = Grid((2.62, 2.0, 2.0), (3132.21, 899.0, 25863.0), (6, 10, 12))
CLASSES = [{"name": "ecs", "index": [1]}, {"name": "mito", "index": [2]},
           {"name": "er_mem", "index": [3]}]


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_mode_on_zarr(tmp_path):
    ecs = np.zeros(GRID.shape, np.uint8)
    ecs[0:2, 0:4, 0:5] = 1
    shifted = np.roll(ecs, 1, axis=2)  # tp 32, fp 8, fn 8: IoU 32/48, Dice 64/80
    write_label(tmp_path / "t.zarr", 1, "ecs", ecs, GRID)
    write_label(tmp_path / "p.zarr", 1, "ecs", shifted, GRID)
    mito = np.zeros(GRID.shape, np.uint8)
    mito[2:4, 2:4, 6:9] = 1
    write_label(tmp_path / "t.zarr", 1, "mito", mito, GRID)
    write_label(tmp_path / "p.zarr", 1, "mito", mito, GRID)
    paths = run(mode="evaluate", truth=str(tmp_path / "t.zarr"), prediction=str(tmp_path / "p.zarr"),
                out=str(tmp_path / "scores"))
    rows = read_rows(paths["csv"])
    crop_rows = {r["class"]: r for r in rows if r["level"] == "crop"}
    assert float(crop_rows["ecs"]["iou"]) == pytest.approx(32 / 48)
    assert float(crop_rows["ecs"]["dice"]) == pytest.approx(64 / 80)
    assert float(crop_rows["mito"]["f1"]) == 1.0 and float(crop_rows["mito"]["hausdorff"]) == 0.0
    overall = [r for r in rows if r["class"] == "overall"]
    assert float(overall[0]["score"]) == pytest.approx(math.sqrt(1.0 * 32 / 48))
    assert (tmp_path / "scores" / "scores.md").exists() and (tmp_path / "scores" / "scores.png").exists()


def test_evaluate_mode_needs_truth_and_prediction(tmp_path):
    with pytest.raises(Auto3DSegError, match="--truth"):
        run(mode="evaluate", prediction=str(tmp_path))
    # cellmap's own errors reach the CLI as Auto3DSegError (one printed message, exit 1)
    write_label(tmp_path / "p.zarr", 1, "ecs", np.zeros(GRID.shape, np.uint8), GRID)
    with pytest.raises(Auto3DSegError, match="missing.csv"):
        run(mode="evaluate", truth=str(tmp_path / "missing.csv"), prediction=str(tmp_path / "p.zarr"),
            out=str(tmp_path / "o"))


def save(path, zyx, grid):
    import nibabel as nib

    data = np.transpose(zyx, (3, 2, 1, 0)) if zyx.ndim == 4 else np.transpose(zyx, (2, 1, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data),
                             nifti_affine(grid.voxel_size_nm, grid.translation_nm)), str(path))


def test_evaluate_cli_on_nifti_pair(tmp_path):
    lab = np.zeros(GRID.shape, np.uint8)
    lab[0:2, 0:4, 0:5] = 1       # ecs
    lab[3:5, 3:6, 3:6] = 2       # one mito
    lab[:, :, 11] = 255          # unknown (ignore) slab
    save(tmp_path / "nifti" / "labels" / "jrc_a_crop3.nii.gz", lab, GRID)
    pred = np.stack([(lab == 1), (lab == 2), np.zeros_like(lab, bool)]).astype(np.uint8)
    pred[0, :, :, 11] = 1        # false ecs only where the truth is unknown: not scored
    pred[2, 0, 0, 0] = 1         # er_mem is not annotated in this crop: not scored
    save(tmp_path / "preds" / "jrc_a_crop3.nii.gz", pred, GRID)
    dl = {"name": "t", "sigmoid": True, "ignore_value": 255, "class_names": CLASSES,
          "training": [{"image": "images/jrc_a_crop3_0000.nii.gz",
                        "label": "labels/jrc_a_crop3.nii.gz", "fold": 0, "annotated": 0b011}],
          "testing": []}
    (tmp_path / "nifti" / "datalist.json").write_text(json.dumps(dl))
    cmd = [sys.executable, str(REPO / "auto3dseg" / "run_auto3dseg.py"), "--mode", "evaluate",
           "--datalist", str(tmp_path / "nifti" / "datalist.json"),
           "--truth", str(tmp_path / "nifti" / "labels"), "--prediction", str(tmp_path / "preds"),
           "--out", str(tmp_path / "scores")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = read_rows(tmp_path / "scores" / "scores.csv")
    scored = {r["class"] for r in rows if r["level"] == "crop"}
    assert scored == {"ecs", "mito"}
    overall = [r for r in rows if r["class"] == "overall"][0]
    assert float(overall["score"]) == pytest.approx(1.0)
