"""Conversion on dask-jobqueue SLURMCluster workers started from a cluster profile."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from auto3dseg import slurm

pytestmark = pytest.mark.slurm


def test_dask_cluster_job_script_comes_from_the_profile(local_slurm, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (extra [slurm])")
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: debug\naccount: lab\nqos: short\nenv: {OMP_NUM_THREADS: '1'}\n"
                       "setup: ['echo ready']\nmodules: [cuda/12]\n"
                       "steps:\n  convert: {cpus: 3, mem_mb: 1024, time_min: 75}\n")
    client = slurm.dask_cluster(profile, jobs=0, log_dir=tmp_path / "logs")
    try:
        script = client.cluster.job_script()
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    for line in ("#SBATCH -p debug", "#SBATCH -A lab", "#SBATCH --qos=short",
                 "#SBATCH --cpus-per-task=3", "#SBATCH --mem=1G", "#SBATCH -t 01:15:00",
                 f"#SBATCH -e {tmp_path / 'logs'}/", "module load cuda/12", "echo ready",
                 "export OMP_NUM_THREADS=1"):
        assert line in script, line


def test_converter_runs_its_slabs_on_slurm_workers(local_slurm, tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (extra [slurm])")
    from auto3dseg.convert_zarr_to_nifti import convert
    from cellmap.sample import build_sample

    split = build_sample(str(tmp_path / "sample"), quiet=True)
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: debug\nenv: {OMP_NUM_THREADS: '1'}\n"
                       "steps:\n  convert: {cpus: 1, mem_mb: 1500, time_min: 10}\n")
    monkeypatch.setenv("CELLMAP_DASK_LOG_DIR", str(tmp_path / "dask_logs"))
    convert(split, str(tmp_path / "on_slurm"), crops="1,2", cluster="slurm",
            slurm_profile=str(profile), quiet=True)
    # The slab tasks ran in a SLURM job (a dask worker), which logged into the folder asked for.
    logs = list((tmp_path / "dask_logs").iterdir())
    assert logs and any("dask-worker" in p.name for p in logs)
    # The same conversion in local processes gives the same volumes on the same grid.
    convert(split, str(tmp_path / "local"), crops="1,2", quiet=True)
    remote = json.loads((tmp_path / "on_slurm" / "datalist.json").read_text())
    local = json.loads((tmp_path / "local" / "datalist.json").read_text())
    assert len(remote["training"]) == 2 and remote["training"] == local["training"]
    for item in remote["training"]:
        for key in ("image", "label"):
            a = nib.load(str(tmp_path / "on_slurm" / item[key]))
            b = nib.load(str(tmp_path / "local" / item[key]))
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
