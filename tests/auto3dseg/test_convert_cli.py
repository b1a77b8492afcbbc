"""The converter CLI as a user runs it (a file path and Fire arguments), and kill-and-resume."""

import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_synth import em_field, read_json, world_centres, write_crop, write_datasplit, write_raw  # noqa: E402

from auto3dseg.convert_zarr_to_nifti import normalise_list, normalise_spacing  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "auto3dseg", "convert_zarr_to_nifti.py")


def test_fire_values_are_normalised_at_the_entry():
    assert normalise_list((7, 9), "crops") == ["7", "9"]       # --crops=7,9
    assert normalise_list(7, "crops") == ["7"]                 # --crops=7
    assert normalise_list("crop7", "crops") == ["crop7"]
    assert normalise_list("[7, crop9]", "crops") == ["7", "crop9"]
    assert normalise_list(None, "crops") is None
    assert normalise_spacing(8) == (8.0, 8.0, 8.0)
    assert normalise_spacing((5.24, 4, 4)) == (5.24, 4.0, 4.0)
    assert normalise_spacing("8 8 8") == (8.0, 8.0, 8.0)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """One dataset, two crops; crop1 large enough (64 x 128 x 128 at 4 nm) to be killed mid-crop."""
    root = tmp_path_factory.mktemp("cli")
    za = str(root / "jrc_k-a" / "jrc_k-a.zarr")
    write_raw(za, (4.0,) * 3, (2.0,) * 3, (64, 128, 128), chunks=(16, 64, 64), levels=2)
    lab = np.zeros((64, 128, 128), np.uint8)
    lab[:, :, 64:] = 1
    write_crop(za, "crop1", (4.0,) * 3, (2.0,) * 3, {"ecs": lab}, chunks=(16, 64, 64))
    write_crop(za, "crop2", (4.0,) * 3, (2.0,) * 3, {"ecs": lab[:16, :32, :32]})
    split = write_datasplit(root / "datasplit.csv", [("train", za, "crop1", ["ecs"]), ("train", za, "crop2", ["ecs"])])
    return root, split


def _cli(args, cwd, **kw):
    return subprocess.Popen([sys.executable, SCRIPT] + args, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_cli_as_a_file_with_fire_crop_tuple(big, tmp_path):
    root, split = big
    p = _cli(["--datasplit", split, "--output_dir", str(tmp_path / "o"), "--crops=1,2", "--target_spacing", "8",
              "--fold_by", "crop", "--quiet"], cwd=str(tmp_path))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "2 crops: 2 kept" in out and "conversion_report.md" in out
    dl = read_json(tmp_path / "o" / "datalist.json")
    assert sorted(t["label"] for t in dl["training"]) == ["labels/jrc_k-a_crop1.nii.gz", "labels/jrc_k-a_crop2.nii.gz"]
    assert {t["fold"] for t in dl["training"]} == {0, 1}


def test_bad_option_is_a_clear_error(big, tmp_path):
    root, split = big
    p = _cli(["--datasplit", split, "--output_dir", str(tmp_path / "o"), "--fold_by", "cell"], cwd=str(tmp_path))
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "--fold_by 'cell'" in err and "dataset" in err


def test_killed_mid_crop_leaves_no_complete_looking_file_and_rerun_resumes(big, tmp_path):
    root, split = big
    out = tmp_path / "o"
    args = ["--datasplit", split, "--output_dir", str(out), "--target_spacing", "4", "--fold_by", "crop",
            "--slab_voxels", "16384", "--quiet"]
    p = _cli(args, cwd=str(tmp_path))
    img = out / "images" / "jrc_k-a_crop1_0000.nii.gz"
    deadline = time.time() + 90
    killed = False
    while time.time() < deadline and p.poll() is None:
        tmps = list((out / "images").glob("jrc_k-a_crop1_0000.nii.gz.tmp-*")) if (out / "images").is_dir() else []
        if tmps and tmps[0].stat().st_size > 50_000:   # several slabs streamed, crop not finished
            p.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.005)
    p.communicate(timeout=30)
    assert killed, "the converter finished before it could be killed; make the crop bigger"
    assert not img.exists()                              # nothing under the final name
    assert not (out / ".provenance" / "jrc_k-a_crop1.json").exists()
    assert list((out / "images").glob("*.tmp-*"))       # only the temporary file was left behind
    p = _cli(args, cwd=str(tmp_path))
    stdout, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    assert not list(out.rglob("*.tmp-*"))
    data = np.asarray(nib.load(str(img)).dataobj)
    x, y, z = world_centres(data.shape, nib.load(str(img)).affine)
    np.testing.assert_allclose(data.astype(float), em_field(z, y, x), atol=0.51)
    lab = np.asarray(nib.load(str(out / "labels" / "jrc_k-a_crop1.nii.gz")).dataobj).transpose(2, 1, 0)
    assert lab.shape == (64, 128, 128) and np.all(lab[:, :, 64:] == 1) and np.all(lab[:, :, :64] == 0)
    # a third run finds both crops complete and unchanged
    p = _cli(args, cwd=str(tmp_path))
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "2 unchanged (skipped)" in stdout, err


def test_a_crop_that_fails_to_convert_fails_the_command_and_keeps_the_others(tmp_path):
    """A corrupt raw chunk (undecodable bytes) in one dataset: the other dataset's crop is still written,
    and the command exits non-zero naming the failed crop instead of reporting success."""
    good = str(tmp_path / "jrc_ok" / "jrc_ok.zarr")
    bad = str(tmp_path / "jrc_bad" / "jrc_bad.zarr")
    for za in (good, bad):
        write_raw(za, (4.0,) * 3, (2.0,) * 3, (16, 32, 32), chunks=(8, 16, 16), levels=1)
        lab = np.zeros((16, 32, 32), np.uint8)
        lab[:, :, 16:] = 1
        write_crop(za, "crop1", (4.0,) * 3, (2.0,) * 3, {"ecs": lab})
    write_crop(good, "crop2", (4.0,) * 3, (2.0,) * 3, {"ecs": lab[:8]})  # two kept crops make two folds
    s0 = os.path.join(bad, "recon-1", "em", "fibsem-uint8", "s0")
    chunk_files = [os.path.join(d, f) for d, _, fs in os.walk(s0) for f in fs if not f.startswith(".")]
    assert chunk_files
    for f in chunk_files:
        with open(f, "wb") as fh:
            fh.write(b"this is not a compressed chunk")
    split = write_datasplit(tmp_path / "datasplit.csv", [("train", good, "crop1", ["ecs"]), ("train", good, "crop2", ["ecs"]),
                                                           ("train", bad, "crop1", ["ecs"])])
    p = _cli(["--datasplit", split, "--output_dir", str(tmp_path / "o"), "--target_spacing", "4", "--fold_by", "crop",
              "--quiet"], cwd=str(tmp_path))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2, (out, err)
    assert "jrc_bad_crop1" in err and "failed to convert" in err
    assert os.path.exists(tmp_path / "o" / "images" / "jrc_ok_crop1_0000.nii.gz")
    assert not os.path.exists(tmp_path / "o" / "images" / "jrc_bad_crop1_0000.nii.gz")
    report = read_json(tmp_path / "o" / "conversion_report.json")
    verdicts = {rec["key"]: rec["verdict"] for rec in report["crops"]}
    assert verdicts == {"jrc_ok_crop1": "kept", "jrc_ok_crop2": "kept", "jrc_bad_crop1": "excluded: conversion_error"}
