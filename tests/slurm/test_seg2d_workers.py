"""The 2D tuner's Optuna worker array on the local SLURM: N workers, one journal-file study."""

from __future__ import annotations

import numpy as np
import pytest

from auto3dseg import slurm

pytestmark = pytest.mark.slurm


def _frames(root, n=2, size=64):
    """n frames of bright disks on noise (images/ and masks/ TIFFs with the same names)."""
    import tifffile

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    y, x = np.mgrid[:size, :size]
    for i in range(n):
        gt = np.zeros((size, size), np.uint16)
        for k, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
            gt[(y - cy - i) ** 2 + (x - cx) ** 2 < 36] = k
        image = (gt > 0).astype(np.float32) + rng.normal(0, 0.2, gt.shape).astype(np.float32)
        tifffile.imwrite(root / "images" / f"frame{i:03d}.tif", image)
        tifffile.imwrite(root / "masks" / f"frame{i:03d}.tif", gt)


def test_tune_workers_share_one_journal_study(local_slurm, tmp_path):
    pytest.importorskip("cellpose", reason="cellpose is not installed")
    import optuna
    import torch
    from cellpose import models

    torch.manual_seed(0)
    weights = tmp_path / "random_cp3"
    models.CellposeModel(gpu=False).net.save_model(str(weights))  # no download: random weights
    _frames(tmp_path / "ds")
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("search_space:\n  diameter: [12]\n  niter: [0, 200]\nstudy:\n  n_startup_trials: 2\n")
    journal = out / "study.log"
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: debug\nenv: {OMP_NUM_THREADS: '1'}\n"
                       "steps:\n  seg2d_tune: {cpus: 1, mem_mb: 3000, time_min: 10}\n")
    tune = ["--dataset", str(tmp_path / "ds"), "--model", str(weights), "--n_trials", "4",
            "--out", str(out), "--config", str(cfg), "--storage", str(journal),
            "--calibrate=False", "--progress=False"]
    result = slurm.submit_seg2d_tune(tune, workers=2, profile=profile, work_dir=out, base_seed=7)
    job = result.job_ids["seg2d_tune"]
    records = local_slurm.wait(job, timeout_s=240)
    logs = {i: (out / "slurm" / "logs" / f"s2d-tune-{job}_{i}.out").read_text() for i in (0, 1)}
    assert [r["JobState"] for r in records] == ["COMPLETED", "COMPLETED"], logs
    assert "Optuna worker 0 with seed 7" in logs[0] and "Optuna worker 1 with seed 8" in logs[1]
    # One shared study: 4 finished trials in total, plus at most one that the other worker had
    # started before the total was reached (two separate studies would hold 8).
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (summary,) = optuna.study.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 4 <= len(finished) <= 5
    assert (out / "best_params.json").is_file()
    # A worker array with a shared seed or without a journal file is refused before submitting.
    with pytest.raises(slurm.SlurmError, match="journal file"):
        slurm.seg2d_tune_step(["--storage", str(out / "study.db")])
    with pytest.raises(slurm.SlurmError, match="--seed"):
        slurm.seg2d_tune_step(["--storage", str(journal), "--seed", "3"])
