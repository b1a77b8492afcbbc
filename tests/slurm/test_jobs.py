"""Job records, failed-task resubmission and memory-overuse reports on the real local SLURM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auto3dseg import slurm
from auto3dseg.resources import Resources

pytestmark = pytest.mark.slurm
HERE = Path(__file__).parent / "templates"
TINY = Resources(cpus=1, mem_mb=200, time_min=5)


def _profile(tmp_path: Path) -> Path:
    path = tmp_path / "test-profile.yaml"
    path.write_text("name: test\npartition: debug\nenv: {OMP_NUM_THREADS: '1'}\n")
    return path


def test_failed_array_task_is_resubmitted_alone(local_slurm, tmp_path):
    work = tmp_path / "work"
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "b").touch()
    (markers / "fail_b").touch()  # task 1 (item b) fails on the first run
    items = ("a", "b", "c")
    steps = [
        slurm.Step("train", str(HERE / "flaky_array.sbatch"), (str(markers),), TINY, items=items),
        slurm.Step("ensemble", str(HERE / "touch.sbatch"), (str(tmp_path / "ensembled"),), TINY,
                   after=("train",)),
    ]
    first = slurm.submit_steps(steps, _profile(tmp_path), work)
    train_id, ens_id = first.job_ids["train"], first.job_ids["ensemble"]
    records = local_slurm.wait(train_id)
    by_task = {r["ArrayTaskId"]: r["JobState"] for r in records}
    assert by_task == {"0": "COMPLETED", "1": "FAILED", "2": "COMPLETED"}
    # The ensemble waits on a failed dependency forever.
    ens = local_slurm.job_fields(ens_id)[0]
    assert ens["JobState"] == "PENDING"
    states = slurm.job_states(slurm.load_records(work), work / "slurm" / "status")
    assert states[f"{train_id}_1"].state == "FAILED"

    (markers / "fail_b").unlink()
    second = slurm.submit_steps(steps, _profile(tmp_path), work)
    new_train = second.job_ids["train"]
    failed_line = next(line for line in second.status if "FAILED" in line)
    assert failed_line.startswith(f"train [b]: job {train_id}_1 FAILED (exit 3:0)")
    assert failed_line.endswith(f"log {work / 'slurm' / 'logs' / f'a3d-train-{train_id}_1.out'}")
    new_records = slurm.load_records(work)
    assert [(r.step, r.indices) for r in new_records] == [
        ("train", (0, 1, 2)), ("ensemble", None), ("train", (1,)), ("ensemble", None)]
    assert "--array=1" in new_records[2].argv
    assert f"--dependency=afterok:{new_train}" in new_records[3].argv
    rerun = local_slurm.wait(new_train)
    assert [(r["ArrayTaskId"], r["JobState"]) for r in rerun] == [("1", "COMPLETED")]
    assert local_slurm.job_fields(ens_id)[0]["JobState"] == "CANCELLED"
    final = local_slurm.wait(second.job_ids["ensemble"])
    assert final[0]["JobState"] == "COMPLETED"
    # Items a and c ran once (first job), b ran in the resubmitted job only.
    assert (markers / "done_a").read_text().strip() == train_id
    assert (markers / "done_b").read_text().strip() == new_train
    assert (markers / "done_c").read_text().strip() == train_id
    # A third call finds everything completed and submits nothing.
    third = slurm.submit_steps(steps, _profile(tmp_path), work)
    assert third.job_ids == {} and len(slurm.load_records(work)) == 4
    assert all("COMPLETED" in line for line in third.status)


def test_memory_overuse_is_reported(local_slurm, tmp_path):
    work = tmp_path / "work"
    step = slurm.Step("analyze", str(HERE / "hog.sbatch"), ("400",),
                      Resources(cpus=1, mem_mb=100, time_min=5))
    result = slurm.submit_steps([step], _profile(tmp_path), work)
    job = result.job_ids["analyze"]
    local_slurm.wait(job)
    states = slurm.job_states(slurm.load_records(work), work / "slurm" / "status")
    assert states[job].state == "OUT_OF_MEMORY"
    assert "memory limit" in states[job].detail
    lines = slurm.status_lines(work)
    assert len(lines) == 1
    assert "OUT_OF_MEMORY" in lines[0] and "--mem=100M" in lines[0]
    assert "steps.analyze.mem_mb" in lines[0]
    # The status file written by the EXIT trap is absent: SIGKILL leaves no trap behind,
    # so a forgotten job would still count as failed.
    assert not (work / "slurm" / "status" / f"{job}.exit").exists()
    data = json.loads((work / "slurm" / "jobs.json").read_text())
    assert data["jobs"][0]["job_id"] == job


def test_forgotten_jobs_fall_back_to_exit_code_files(local_slurm, tmp_path):
    # Job ids the scheduler never ran (ids restart at 1 per bring-up, so 900000+ are unknown):
    # without sacct and scontrol, the exit-code file written by env.sh's EXIT trap decides.
    status = tmp_path / "status"
    status.mkdir()
    (status / "900001.exit").write_text("0\n")
    (status / "900002_1.exit").write_text("3\n")
    records = [slurm.JobRecord("analyze", "900001", ("sbatch",)),
               slurm.JobRecord("train", "900002", ("sbatch",), indices=(0, 1), items=("a", "b"))]
    states = slurm.job_states(records, status)
    assert {k: s.state for k, s in states.items()} == {
        "900001": "COMPLETED", "900002_0": "UNKNOWN", "900002_1": "FAILED"}
    assert states["900002_1"].exit_code == "3:0"


def test_gpu_memory_failure_is_told_apart_from_host_memory(local_slurm, tmp_path):
    status = tmp_path / "status"
    status.mkdir()
    (status / "900003.exit").write_text("1\n")
    log = tmp_path / "a3d-train-900003.out"
    log.write_text("epoch 1\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    rec = slurm.JobRecord("train", "900003", ("sbatch", "--mem=8000M"),
                          log=str(tmp_path / "a3d-train-%j.out"))
    state = slurm.job_states([rec], status)["900003"]
    assert state.state == "GPU_OUT_OF_MEMORY" and "CUDA out of memory" in state.detail
    assert "lower the batch size" in slurm._explain("train", state, None, rec)


def test_sacct_reports_every_array_task(local_slurm, tmp_path):
    if not local_slurm.accounting:
        pytest.skip("sacct needs slurmdbd: run with CELLMAP_SLURM_ACCOUNTING=1 (installs slurmdbd "
                    "and mariadb-server, ~200 MB)")
    import time

    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "fail_y").touch()
    step = slurm.Step("train", str(HERE / "flaky_array.sbatch"), (str(markers),), TINY,
                      items=("x", "y", "z"))
    job = slurm.submit_steps([step], _profile(tmp_path), tmp_path / "work").job_ids["train"]
    local_slurm.wait(job)
    want = {f"{job}_0": "COMPLETED", f"{job}_1": "FAILED", f"{job}_2": "COMPLETED"}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the database lags the controller by a moment
        found = {k: v[0] for k, v in slurm._query_sacct([job]).items()}
        if found == want:
            break
        time.sleep(0.5)
    assert found == want
    assert slurm._query_sacct([job])[f"{job}_1"][1] == "3:0"
