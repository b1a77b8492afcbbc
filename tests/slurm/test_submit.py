"""`run_auto3dseg --mode submit`: exact dry-run lines, and the real chain on the local SLURM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from auto3dseg import slurm

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "auto3dseg" / "templates"
CONFIG = REPO / "configs" / "auto3dseg.yaml"


def write_tiny_datalist(root: Path, n_train: int = 4) -> Path:
    """n_train 16^3 cases (folds alternate 0/1) + 1 testing image, in the converter's contract."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.arange(16)] * 3, indexing="ij")
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[(x - 8) ** 2 + (y - 8) ** 2 + (z - 8) ** 2 < 16] = 2
    lab[:4] = 1
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    affine = np.diag([8.0, 8.0, 8.0, 1.0])

    def image(name):
        img = np.where(lab == 2, 180, np.where(lab == 1, 90, 130)) + rng.normal(0, 10, lab.shape)
        nib.save(nib.Nifti1Image(np.clip(img, 1, 255).astype(np.uint8), affine),
                 str(root / "images" / f"{name}_0000.nii.gz"))

    training = []
    for i in range(n_train):
        image(f"tiny_crop{i}")
        nib.save(nib.Nifti1Image(lab, affine), str(root / "labels" / f"tiny_crop{i}.nii.gz"))
        training.append({"image": f"images/tiny_crop{i}_0000.nii.gz",
                         "label": f"labels/tiny_crop{i}.nii.gz", "fold": i % 2, "annotated": 3})
    image("tiny_crop9")
    datalist = {"name": "tiny", "description": "slurm test", "modality": "EM", "sigmoid": True,
                "ignore_value": 255,
                "class_names": [{"name": "ecs", "index": [1]}, {"name": "mito", "index": [2]}],
                "training": training, "testing": [{"image": "images/tiny_crop9_0000.nii.gz"}]}
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auto3dseg.run_auto3dseg", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_dry_run_prints_the_exact_sbatch_lines(tmp_path):
    datalist = write_tiny_datalist(tmp_path / "nifti")
    work, templates = tmp_path / "work", tmp_path / "templates"
    templates.mkdir()
    profile = tmp_path / "site.yaml"
    profile.write_text("""
name: site
partition: cpu
account: lab
gpu_gres: gpu
python: python
setup: ["conda activate cellmap"]
steps:
  analyze: {partition: bigmem, cpus: 8, mem_mb: 64000, time_min: 120}
  generate: {partition: gpu, cpus: 4, mem_mb: 16000, time_min: 30, gpus: 1}
  train: {partition: gpu, cpus: 16, mem_mb: 300000, time_min: 4320, gpus: 2}
  ensemble: {partition: gpu, cpus: 4, mem_mb: 32000, time_min: 90, gpus: 1}
""")
    proc = run_cli("--mode", "submit", "--dry_run", "--profile", str(profile),
                   "--datalist", str(datalist), "--work_dir", str(work),
                   "--algos", "segresnet,swinunetr", "--num_fold", "2", "--num_epochs", "5",
                   "--templates", str(templates), "--config", str(CONFIG), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    run = (f"--datalist={datalist} --work_dir={work} --algos=segresnet,swinunetr --num_fold=2 "
           f"--num_epochs=5 --templates={templates} --config={CONFIG} --workers=2")
    common = (f"--chdir={REPO} --export=ALL,CELLMAP_SLURM_ENV={work}/slurm/env.sh")
    logs = f"{work}/slurm/logs"
    expected = [
        f"analyze=$(sbatch --parsable --job-name=a3d-analyze --partition=bigmem --account=lab "
        f"--cpus-per-task=8 --mem=64000M --time=0-02:00:00 --output={logs}/a3d-analyze-%j.out "
        f"{common} {REPO}/sbatch/analyze.sbatch {run})",
        f"generate=$(sbatch --parsable --dependency=afterok:$analyze --job-name=a3d-generate "
        f"--partition=gpu --account=lab --cpus-per-task=4 --mem=16000M --time=0-00:30:00 "
        f"--gres=gpu:1 --output={logs}/a3d-generate-%j.out {common} "
        f"{REPO}/sbatch/generate.sbatch {run})",
        f"train=$(sbatch --parsable --dependency=afterok:$generate --job-name=a3d-train "
        f"--partition=gpu --account=lab --cpus-per-task=16 --mem=300000M --time=3-00:00:00 "
        f"--gres=gpu:2 --array=0-3 --output={logs}/a3d-train-%A_%a.out {common} "
        f"{REPO}/sbatch/train_array.sbatch segresnet_0,segresnet_1,swinunetr_0,swinunetr_1 {run})",
        f"ensemble=$(sbatch --parsable --dependency=afterok:$train --job-name=a3d-ensemble "
        f"--partition=gpu --account=lab --cpus-per-task=4 --mem=32000M --time=0-01:30:00 "
        f"--gres=gpu:1 --output={logs}/a3d-ensemble-%j.out {common} "
        f"{REPO}/sbatch/ensemble.sbatch {run})",
    ]
    assert proc.stdout.splitlines() == expected
    # Nothing was submitted or recorded; the environment script the lines name exists.
    assert not (work / "slurm" / "jobs.json").exists()
    env = (work / "slurm" / "env.sh").read_text()
    assert "conda activate cellmap" in env and "export CELLMAP_PYTHON=python" in env
    # The planner's reasoning and the profile's overrides are explained on stderr.
    assert "profile site sets {'cpus': 16, 'mem_mb': 300000, 'time_min': 4320, 'gpus': 2}" in proc.stderr


def test_submit_refuses_unknown_options_and_missing_datalist(tmp_path):
    proc = run_cli("--mode", "submit", "--dry_run", "--profil", "local",
                   "--datalist", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "unknown option(s) ['profil']" in proc.stderr
    proc = run_cli("--mode", "submit", "--dry_run", "--datalist", str(tmp_path / "none.json"))
    assert proc.returncode == 2 and "none.json does not exist" in proc.stderr


@pytest.mark.slurm
def test_chain_reaches_completed_on_local_slurm(local_slurm, tmp_path):
    datalist = write_tiny_datalist(tmp_path / "nifti")
    work = tmp_path / "work"
    args = ["--profile", "local", "--datalist", str(datalist), "--work_dir", str(work),
            "--templates", str(TEMPLATES), "--algos", "tinyseg", "--num_fold", "2",
            "--num_epochs", "1", "--config", str(CONFIG)]
    dry = run_cli("--mode", "submit", "--dry_run", *args)
    assert dry.returncode == 0, dry.stderr
    proc = run_cli("--mode", "submit", *args)
    assert proc.returncode == 0, proc.stderr
    records = slurm.load_records(work)
    assert [r.step for r in records] == ["analyze", "generate", "train", "ensemble"]
    # What ran is what the dry run printed (dependencies as $step there, job ids here).
    ids = {r.step: r.job_id for r in records}
    printed = []
    for rec in records:
        line = slurm.render_line(rec.step, list(rec.argv))
        for step, job_id in ids.items():
            line = line.replace(f"afterok:{job_id}", f"afterok:${step}")
        printed.append(line)
    assert printed == dry.stdout.splitlines()
    assert records[2].items == ("tinyseg_0", "tinyseg_1") and "--array=0-1" in records[2].argv

    for rec in records:
        final = local_slurm.wait(rec.job_id, timeout_s=240)
        logs = sorted((work / "slurm" / "logs").glob(f"*{rec.job_id}*"))
        text = "\n".join(p.read_text()[-3000:] for p in logs)
        assert all(r["JobState"] == "COMPLETED" for r in final), f"{rec.step}: {final}\n{text}"
        print(f"{rec.step}: " + ", ".join(f"{r['RunTime']}" for r in final), file=sys.stderr)
    states = slurm.job_states(records, work / "slurm" / "status")
    assert sorted(states) == sorted([ids["analyze"], ids["generate"], f"{ids['train']}_0",
                                     f"{ids['train']}_1", ids["ensemble"]])
    assert all(s.state == "COMPLETED" for s in states.values())
    # One bundle per array task, each trained; the ensemble predicted the testing image.
    for i in (0, 1):
        log = (work / "slurm" / "logs" / f"a3d-train-{ids['train']}_{i}.out").read_text()
        assert f"array task {i} trains bundle tinyseg_{i}" in log
    assert (work / "datastats.yaml").is_file()
    pred = nib.load(str(work / "ensemble_output" / "tiny_crop9.nii.gz"))
    assert pred.shape[:3] == (16, 16, 16)
    # Submitting again finds everything completed and submits nothing.
    again = run_cli("--mode", "submit", *args)
    assert again.returncode == 0 and "nothing submitted" in again.stderr
    assert len(slurm.load_records(work)) == 4
