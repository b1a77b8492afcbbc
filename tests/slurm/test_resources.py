"""The resource planner against numbers computed by hand (no SLURM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from auto3dseg import slurm
from auto3dseg.resources import (ResourcePlanError, TrainMemoryModel, case_voxels,
                                 gpu_memory_hint, plan_all, plan_analyze, plan_ensemble,
                                 plan_train)

BIG = [800**3, 500**3, 300**3, 200**3]


def _header_only_nifti(path: Path, shape) -> None:
    """A .nii file holding only a header for `shape` (no voxel data): the planner must not read data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    path.write_bytes(hdr.binaryblock + b"\0" * 4)


def test_case_voxels_reads_headers_only(tmp_path):
    (tmp_path / "images").mkdir()
    shapes = {"a": (800, 800, 800), "b": (10, 20, 30)}
    for name, shape in shapes.items():
        _header_only_nifti(tmp_path / "images" / f"{name}.nii", shape)
    datalist = {"class_names": [{"name": "mito", "index": [1]}],
                "training": [{"image": f"images/{n}.nii", "label": "x", "fold": 0}
                             for n in shapes],
                "testing": [{"image": "images/b.nii"}]}
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    assert case_voxels(tmp_path / "datalist.json") == [512_000_000, 6000]
    assert case_voxels(tmp_path / "datalist.json", key="testing") == [6000]
    datalist["training"].append({"image": "images/missing.nii", "label": "x", "fold": 0})
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    with pytest.raises(ResourcePlanError, match="missing.nii"):
        case_voxels(tmp_path / "datalist.json")


def test_train_memory_and_time_by_hand():
    # 2 ranks x (2 workers + 1) = 6 cases in flight: 800^3, 500^3, 300^3, 200^3, 800^3, 500^3.
    # Our label path (uint8, expanded after cropping): the 2 largest in validation at
    # 4 + 1 x 15 = 19 B/voxel: 637,000,000 x 19 = 12,103,000,000 B; the other 4 in loader workers at
    # 4 + 1 = 5 B/voxel: 672,000,000 x 5 = 3,360,000,000 B; sum 15,463,000,000 B = 14,746.9 MiB;
    # + 2 x 6144 MiB = 27,034.9; x 1.15 = 31,090.1 -> next GiB multiple 31,744 MiB.
    # Time: ceil(4 cases x 2 patches / 2 ranks) = 4 steps; (100 x 4 x 0.5 s x 1.2 / 60 + 10) x 1.25
    # = 17.5 min -> 20 min (multiple of 10). CPUs 2 x 3 = 6, GPUs 2.
    model = TrainMemoryModel(n_classes=14, workers=2, ranks=2)
    res = plan_train(BIG, model, num_epochs=100, patches_per_case=2, seconds_per_patch=0.5)
    assert (res.mem_mb, res.time_min, res.cpus, res.gpus) == (31_744, 20, 6, 2)
    assert "x 19 B/voxel" in res.explanation and "--mem=31744M" in res.explanation
    # MONAI's stock templates (float32 label expanded on the whole case before cropping):
    # all 6 cases at 4 + 4 x 15 = 64 B/voxel: 1,309,000,000 x 64 = 83,776,000,000 B = 79,895.0 MiB
    # + 12,288 = 92,183.0 x 1.15 = 106,010.5 -> 106,496 MiB.
    stock = TrainMemoryModel(n_classes=14, workers=2, ranks=2, label_bytes_per_voxel=4,
                             expand_before_crop=True)
    assert plan_train(BIG, stock, num_epochs=100).mem_mb == 106_496
    # The prior attempt's int64 label lambda: 4 + 8 x 15 = 124 B/voxel; 1.309e9 x 124 =
    # 162,316,000,000 B = 154,796.6 MiB + 12,288 = 167,084.6 x 1.15 = 192,147.3 -> 192,512 MiB.
    int64 = TrainMemoryModel(n_classes=14, workers=2, ranks=2, label_bytes_per_voxel=8,
                             expand_before_crop=True)
    assert plan_train(BIG, int64, num_epochs=100).mem_mb == 192_512


def test_analyze_by_hand():
    # 2 workers hold 800^3 + 500^3 = 637,000,000 voxels x 50 B = 31,850,000,000 B = 30,374.5 MiB
    # + 2048 = 32,422.5 x 1.15 = 37,285.9 -> 37,888 MiB. Time: 672,000,000 voxels x 32/512^3 s
    # = 160.2 s / 2 workers / 60 x 1.5 + 5 = 7.0 min -> at least 10 min.
    res = plan_analyze(BIG, workers=2)
    assert (res.mem_mb, res.time_min, res.cpus) == (37_888, 10, 3)
    # 10 cases of 800^3 = 5.12e9 voxels x 32/512^3 = 1220.7 s / 2 / 60 = 10.17 x 1.5 + 5 = 20.3 -> 25.
    assert plan_analyze([800**3] * 10, workers=2).time_min == 25
    # Our streamed engine: 2 workers x 1024 MiB + 2048 = 4096 x 1.15 = 4710.4 -> 5120 MiB for any
    # case size; 10 x 800^3 = 5.12e9 voxels x 1e-7 s = 512 s / 2 / 60 = 4.27 x 1.5 + 5 = 11.4 -> 15.
    ours = plan_analyze([800**3] * 10, workers=2, engine="ours")
    assert (ours.mem_mb, ours.time_min) == (5120, 15)
    assert plan_analyze([100**3], workers=2, engine="ours").mem_mb == 5120


def test_ensemble_by_hand():
    # 800^3 x (4 + 4 x 14 x 3) = 172 B = 88,064,000,000 B = 83,984.375 MiB + 6144 = 90,128.375
    # x 1.15 = 103,647.6 -> 104,448 MiB; time 1 case x 2 bundles x 2 min + 10 = 14 -> 20 min.
    res = plan_ensemble([800**3], n_classes=14, n_bundles=2)
    assert (res.mem_mb, res.time_min, res.gpus) == (104_448, 20, 1)


def test_gpu_hint_reproduces_its_reference_point():
    # The prior attempt's SegResNet figure: ~43 GB at 224 x 224 x 144, batch 1.
    assert "~43 GB" in gpu_memory_hint("segresnet", (224, 224, 144))
    # At 96^3 on a 46 GB GPU: 43e9 / 7,225,344 x 884,736 = 5.27 GB per item; (46-1)/5.27 = 8.5 -> 8.
    assert "fits batch ~8" in gpu_memory_hint("segresnet", (96, 96, 96), gpu_memory_gb=46)
    assert "no GPU memory reference" in gpu_memory_hint("dints", (96, 96, 96))


def test_planner_numbers_reach_the_sbatch_line(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: gpu\naccount: lab\ngpu_gres: gpu:a100\nmax_mem_mb: 100000\n")
    model = TrainMemoryModel(n_classes=14, workers=2, ranks=2, label_bytes_per_voxel=4,
                             expand_before_crop=True)
    res = plan_train(BIG, model, num_epochs=100, patches_per_case=2, seconds_per_patch=0.5)
    step = slurm.Step("train", "train_array.sbatch", ("--work_dir=/w",), res, items=("s_0", "s_1"))
    argv = slurm.sbatch_argv(step, slurm.load_profile(profile), Path("/w"), Path("/w/slurm/env.sh"),
                             chdir=Path("/repo"))
    assert argv == [
        "sbatch", "--parsable", "--job-name=a3d-train", "--partition=gpu", "--account=lab",
        "--cpus-per-task=6", "--mem=100000M", "--time=0-00:20:00", "--gres=gpu:a100:2",
        "--array=0-1", "--output=/w/slurm/logs/a3d-train-%A_%a.out", "--chdir=/repo",
        "--export=ALL,CELLMAP_SLURM_ENV=/w/slurm/env.sh", str(slurm.TEMPLATE_DIR / "train_array.sbatch"),
        "s_0,s_1", "--work_dir=/w"]
    resolved, _ = slurm._resolved(step, slurm.load_profile(profile))
    assert "clamped to the profile's maxima {'mem_mb': 100000}" in resolved.explanation


def test_plan_all_without_datalist_says_so(tmp_path):
    plan = plan_all(tmp_path / "nope.json", n_bundles=2, algos=("segresnet",))
    assert "does not exist yet" in plan.explain()
    assert set(plan.steps) == {"convert", "analyze", "generate", "train", "ensemble"}


def test_profile_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partiton: gpu\n")
    with pytest.raises(slurm.SlurmError, match=r"bad.yaml: unknown keys \['partiton'\]"):
        slurm.load_profile(bad)
    with pytest.raises(slurm.SlurmError, match="cluster-example.yaml"):
        slurm.load_profile("no-such-profile")
