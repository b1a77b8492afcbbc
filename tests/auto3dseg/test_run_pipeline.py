"""End to end on CPU with the tiny template: analyze, generate, train (2 folds, resume), ensemble, predict.

Everything runs through MONAI's real BundleGen / BundleAlgo.train (subprocesses) / AlgoEnsembleBuilder.
"""

import glob
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from auto3dseg.bundles import BundleError, TemplatesUnavailableError, TrainingFailedError
from auto3dseg.run_auto3dseg import run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def state(synthetic_datalist, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = root / "auto3dseg.yaml"
    config.write_text(yaml.safe_dump({"input": {"roi_size": [16, 16, 16]}}))
    return {"datalist": synthetic_datalist, "work_dir": str(root / "work_dir"), "config": str(config), "root": root}


def _run(state, mode, **kw):
    from synth_nifti import TINY_TEMPLATES

    kw.setdefault("templates", TINY_TEMPLATES)
    kw.setdefault("algos", "tinyseg")
    return run(mode=mode, datalist=state["datalist"], work_dir=state["work_dir"], config=state["config"], **kw)


def test_analyze_from_the_script_file(state):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "auto3dseg", "run_auto3dseg.py"), "--mode", "analyze",
         "--datalist", state["datalist"], "--work_dir", state["work_dir"], "--config", state["config"]],
        capture_output=True, text=True, cwd=str(state["root"]),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(state["work_dir"], "datastats.yaml"))
    assert os.path.isfile(os.path.join(state["work_dir"], "datastats_report.md"))


def test_generate_then_train_resumes_a_failed_fold(state, monkeypatch):
    written = _run(state, "generate")
    wd = state["work_dir"]
    assert [os.path.basename(p) for p in written] == ["tinyseg_0", "tinyseg_1"]
    hp = os.path.join(wd, "tinyseg_0", "configs", "hyper_parameters.yaml")
    generated = yaml.safe_load(open(hp))
    assert generated["fold"] == 0 and generated["roi_size"] == [16, 16, 16] and generated["sigmoid"] is True
    assert yaml.safe_load(open(os.path.join(wd, "tinyseg_1", "configs", "hyper_parameters.yaml")))["fold"] == 1

    monkeypatch.setenv("TINYSEG_FAIL_FOLD", "1")  # the test template crashes in fold 1
    with pytest.raises(TrainingFailedError, match="tinyseg_1") as err:
        _run(state, "train", num_epochs=1)
    assert "tinyseg_0" not in str(err.value)
    first = os.path.join(wd, "tinyseg_0", "model", "model.pt")
    assert os.path.isfile(os.path.join(wd, "tinyseg_0", "model", "progress.yaml"))
    assert not os.path.isfile(os.path.join(wd, "tinyseg_1", "model", "progress.yaml"))
    failed = yaml.safe_load(open(os.path.join(wd, "tinyseg_1", "train_status.yaml")))
    assert failed["state"] == "failed" and "simulated crash" in failed["error"]
    stamp = os.stat(first).st_mtime_ns

    monkeypatch.delenv("TINYSEG_FAIL_FOLD")
    scores = _run(state, "train", num_epochs=1)
    assert list(scores) == ["tinyseg_1"]  # fold 0 kept, not retrained
    assert os.stat(first).st_mtime_ns == stamp
    assert 0.0 <= scores["tinyseg_1"] <= 1.0
    # the template wrote num_epochs=1 back into its config (as SegResNet does); the run override is undone
    for fold in (0, 1):
        cfg = yaml.safe_load(open(os.path.join(wd, f"tinyseg_{fold}", "configs", "hyper_parameters.yaml")))
        assert cfg["num_epochs"] == generated["num_epochs"] != 1
    for fold in (0, 1):
        assert yaml.safe_load(open(os.path.join(wd, f"tinyseg_{fold}", "train_status.yaml")))["state"] == "done"


def test_generate_refuses_over_trained_bundles(state):
    before = sorted(glob.glob(os.path.join(state["work_dir"], "tinyseg_*", "model", "*")))
    with pytest.raises(BundleError, match="--force"):
        _run(state, "generate")
    assert sorted(glob.glob(os.path.join(state["work_dir"], "tinyseg_*", "model", "*"))) == before


def test_ensemble_on_testing_list_and_predict_a_folder(state, tmp_path):
    wd = state["work_dir"]
    outs = _run(state, "ensemble")
    assert [os.path.basename(p) for p in outs] == ["jrc_synth-b_crop100.nii.gz"]
    image = os.path.join(os.path.dirname(state["datalist"]), "images", "jrc_synth-b_crop100_0000.nii.gz")
    src, pred = nib.load(image), nib.load(outs[0])
    assert pred.shape == src.shape + (3,)  # one sigmoid channel per class, on the input's grid
    np.testing.assert_allclose(pred.affine, src.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}
    chosen = yaml.safe_load(open(os.path.join(wd, "ensemble.yaml")))["bundles"]
    assert [c["bundle"] for c in chosen] == ["tinyseg_0", "tinyseg_1"]

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image, folder / "foo_0000.nii.gz")
    shutil.copy(image, folder / "bar.nii.gz")
    outs = _run(state, "predict", input=str(folder), output=str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == ["bar.nii.gz", "foo.nii.gz"]
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "out" / "foo.nii.gz")).dataobj), np.asarray(pred.dataobj)
    )


def test_force_moves_trained_bundles_aside(state):
    wd = state["work_dir"]
    _run(state, "generate", force=True)
    moved = glob.glob(os.path.join(wd, "superseded", "tinyseg_0-*", "model", "model.pt"))
    assert len(moved) == 1
    assert not glob.glob(os.path.join(wd, "tinyseg_0", "model", "*.pt"))


def test_unreachable_templates_name_the_option(state):
    with pytest.raises(TemplatesUnavailableError, match="--templates"):
        _run(state, "generate", templates="https://templates.invalid/21ed8e5.tar.gz")
    with pytest.raises(TemplatesUnavailableError, match="--templates"):
        _run(state, "generate", templates=str(state["root"]))  # a folder without <algo>/scripts/algo.py


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only skip of SwinUNETR")
def test_swinunetr_is_skipped_without_gpu(state, caplog):
    caplog.set_level("WARNING")
    assert _run(state, "generate", algos="swinunetr") == []  # the tiny templates have no swinunetr: not reached
    assert "needs a CUDA GPU" in caplog.text


def test_help_lists_modes_and_options(capsys):
    from auto3dseg.run_auto3dseg import MODES, main

    main(["--help"])
    out = capsys.readouterr().out
    assert all(mode in out for mode in MODES)
    assert "templates:" in out and "num_epochs:" in out
