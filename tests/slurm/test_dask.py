"""Conversion work on dask-jobqueue SLURMCluster workers started from a cluster profile."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from auto3dseg import slurm

pytestmark = pytest.mark.slurm


def test_dask_cluster_runs_work_in_a_slurm_job(local_slurm, tmp_path):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (extra [slurm])")
    profile = tmp_path / "p.yaml"
    profile.write_text("partition: debug\nenv: {OMP_NUM_THREADS: '1'}\n"
                       "steps:\n  convert: {cpus: 1, mem_mb: 1024, time_min: 5}\n")
    client = slurm.dask_cluster(profile, jobs=1, log_dir=tmp_path / "logs")
    try:
        client.wait_for_workers(1, timeout=90)
        job_script = client.cluster.job_script()
        assert "#SBATCH -p debug" in job_script and "export OMP_NUM_THREADS=1" in job_script
        assert "--mem=1G" in job_script or "--mem=1024M" in job_script
        # A stand-in conversion: the worker writes a NIfTI volume with a known affine.
        data = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
        affine = np.diag([8.0, 8.0, 8.0, 1.0])
        out = tmp_path / "case_0000.nii.gz"
        job_id = client.submit(os.getenv, "SLURM_JOB_ID", pure=False).result(timeout=60)
        client.submit(nib.save, nib.Nifti1Image(data, affine), str(out)).result(timeout=60)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert job_id is not None and job_id.isdigit()
    back = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_array_equal(back.affine, affine)
    # The worker ran as the SLURM job with that id, and its log went to the asked folder.
    assert any(job_id in p.name for p in (tmp_path / "logs").iterdir())
