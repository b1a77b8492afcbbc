"""SLURM submission: cluster profiles, sbatch command lines, job records and resubmission.

Pure functions build every ``sbatch`` command line as a list of strings (tested by comparing
lists); `launch` is the only place that runs one. Site settings (partition, account, GPUs,
modules, environment activation) come from a cluster profile ``configs/slurm/<name>.yaml``;
the templates under ``sbatch/`` hold none. Job ids go to ``<work_dir>/slurm/jobs.json`` so a
rerun resubmits only what failed (for an array job: only its failed tasks).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cellmap.atomic import write_text_atomic
from auto3dseg.errors import Auto3DSegError
from auto3dseg.resources import Resources

__all__ = [
    "SlurmError", "Profile", "Step", "JobRecord", "TaskState", "load_profile", "env_script_text",
    "write_env_script", "sbatch_argv", "with_dependency", "render_line", "launch", "load_records",
    "job_states", "submit_steps", "status_lines", "SubmitResult",
    "seg2d_tune_step", "submit_seg2d_tune", "dask_cluster", "REPO_ROOT", "TEMPLATE_DIR", "PROFILE_DIR",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / "sbatch"
PROFILE_DIR = REPO_ROOT / "configs" / "slurm"
RECORDS_NAME = "jobs.json"
DONE = {"COMPLETED"}
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
          "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
# Lines of a job log that name a memory failure: host RAM (slurmstepd under OverMemoryKill, the
# cgroup OOM killer) and GPU memory (torch), checked in this order.
OOM_PATTERNS = {
    "OUT_OF_MEMORY": ("exceeded memory limit", "exceeded job memory limit", "oom-kill", "oom_kill"),
    "GPU_OUT_OF_MEMORY": ("cuda out of memory", "outofmemoryerror"),
}
LOG_TAIL_BYTES = 2 * 1024 * 1024
STEP_KEYS = {"partition", "account", "qos", "cpus", "mem_mb", "time_min", "gpus", "constraint",
             "extra_sbatch"}
PROFILE_KEYS = {"name", "partition", "account", "qos", "gpu_gres", "python", "modules", "setup",
                "env", "max_cpus", "max_mem_mb", "max_time_min", "extra_sbatch", "steps"}


class SlurmError(Auto3DSegError):
    """A cluster profile, an sbatch call or a job record is wrong; the message names the fix."""


@dataclass(frozen=True)
class Profile:
    """A cluster profile read from YAML. Every field is optional; None means "site default".

    gpu_gres: the GRES name for GPUs ("gpu" or "gpu:a100"); None = the cluster has no GPUs and
    GPU steps run on CPUs. python: the interpreter jobs use (None = the one that submits).
    modules / setup: `module load` names and shell lines run before Python (env activation).
    steps: per-step overrides of the planner (keys: partition, account, qos, cpus, mem_mb,
    time_min, gpus, constraint, extra_sbatch).
    """

    name: str
    path: Path | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpu_gres: str | None = None
    python: str | None = None
    modules: tuple = ()
    setup: tuple = ()
    env: dict = field(default_factory=dict)
    max_cpus: int | None = None
    max_mem_mb: int | None = None
    max_time_min: int | None = None
    extra_sbatch: tuple = ()
    steps: dict = field(default_factory=dict)

    @property
    def python_path(self) -> str:
        return self.python or sys.executable


def load_profile(profile: str | Path | Profile = "local") -> Profile:
    """Read `configs/slurm/<profile>.yaml` (a name) or a YAML path; unknown keys are errors."""
    if isinstance(profile, Profile):
        return profile
    path = Path(profile)
    if not path.suffix:
        path = PROFILE_DIR / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
        raise SlurmError(f"cluster profile {profile!r} not found ({path}); use one of {known} "
                         f"or copy {PROFILE_DIR / 'cluster-example.yaml'} and pass its path")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - PROFILE_KEYS
    if unknown:
        raise SlurmError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(PROFILE_KEYS)}")
    steps = data.get("steps") or {}
    for step, over in steps.items():
        bad = set(over or {}) - STEP_KEYS
        if bad:
            raise SlurmError(f"{path}: steps.{step} has unknown keys {sorted(bad)}; "
                             f"allowed: {sorted(STEP_KEYS)}")
    return Profile(
        name=data.get("name") or path.stem, path=path, partition=data.get("partition"),
        account=data.get("account"), qos=data.get("qos"), gpu_gres=data.get("gpu_gres"),
        python=data.get("python"), modules=tuple(data.get("modules") or ()),
        setup=tuple(data.get("setup") or ()),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        max_cpus=data.get("max_cpus"), max_mem_mb=data.get("max_mem_mb"),
        max_time_min=data.get("max_time_min"),
        extra_sbatch=tuple(data.get("extra_sbatch") or ()),
        steps={k: dict(v or {}) for k, v in steps.items()})


def env_script_text(profile: Profile) -> str:
    """The shell snippet every template sources: modules, activation, env, status record.

    It exports CELLMAP_PYTHON and, on exit of the job script, writes the exit code to
    `$CELLMAP_STATUS_DIR/<job>[_<task>].exit` (the record used when the scheduler has forgotten
    the job and `sacct` is not available).
    """
    lines = [f"# Generated by auto3dseg.slurm from cluster profile {profile.name!r}"
             f" ({profile.path}); edit the profile, not this file."]
    lines += ["set +u  # module and conda scripts read unset variables"]
    lines += [f"module load {shlex.quote(m)}" for m in profile.modules]
    lines += list(profile.setup)
    lines += ["set -u"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(profile.env.items())]
    python = profile.python_path
    lines += [
        f"export CELLMAP_PYTHON={shlex.quote(python)}",
        'if [[ "$CELLMAP_PYTHON" == */* ]]; then export PATH="$(dirname "$CELLMAP_PYTHON"):$PATH"; fi',
        'CELLMAP_STATUS_DIR="$(dirname "${BASH_SOURCE[0]}")/status"',
        'mkdir -p "$CELLMAP_STATUS_DIR"',
        'if [[ -n "${SLURM_ARRAY_TASK_ID:-}" ]]; then '
        'CELLMAP_JOB_KEY="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"; '
        'else CELLMAP_JOB_KEY="${SLURM_JOB_ID:-local}"; fi',
        "trap 'echo $? > \"$CELLMAP_STATUS_DIR/$CELLMAP_JOB_KEY.exit\"' EXIT",
        'echo "job $CELLMAP_JOB_KEY on $(hostname) at $(date -Is): $CELLMAP_PYTHON"',
    ]
    return "\n".join(lines) + "\n"


def write_env_script(profile: Profile, slurm_dir: Path) -> Path:
    """Write `<slurm_dir>/env.sh` from the profile (atomically) and return its path."""
    path = Path(slurm_dir) / "env.sh"
    write_text_atomic(path, env_script_text(profile))
    return path


@dataclass(frozen=True)
class Step:
    """One sbatch submission of a chain: a template, its arguments, resources, what it waits for.

    items: for an array job, the item (bundle name, worker number) of each array index; the
    template receives them comma-joined as its first argument and picks its own.
    """

    name: str
    template: str
    args: tuple = ()
    resources: Resources = Resources(cpus=1, mem_mb=1024, time_min=10)
    after: tuple = ()
    items: tuple | None = None
    job_name: str | None = None


def _time_arg(minutes: int) -> str:
    days, rest = divmod(int(minutes), 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def _array_spec(indices) -> str:
    """sbatch --array value: runs of consecutive indices as ranges, e.g. [0, 1, 2, 5] -> "0-2,5"."""
    runs: list[list[int]] = []
    for i in sorted(set(int(i) for i in indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _resolved(step: Step, profile: Profile) -> tuple[Resources, dict]:
    """Planner resources with the profile's per-step overrides and maxima applied."""
    over = dict(profile.steps.get(step.name) or {})
    res = step.resources
    given = {k: over[k] for k in ("cpus", "mem_mb", "time_min", "gpus") if k in over}
    if given:
        res = res.with_changes(f"profile {profile.name} sets {given}", **given)
    clamp = {}
    if profile.max_cpus and res.cpus > profile.max_cpus:
        clamp["cpus"] = profile.max_cpus
    if profile.max_mem_mb and res.mem_mb > profile.max_mem_mb:
        clamp["mem_mb"] = profile.max_mem_mb
    if profile.max_time_min and res.time_min > profile.max_time_min:
        clamp["time_min"] = profile.max_time_min
    if clamp:
        res = res.with_changes(f"clamped to the profile's maxima {clamp} (a job cut by --time "
                               "ends as TIMEOUT and is resubmitted by the next submit)", **clamp)
    if res.gpus and not profile.gpu_gres:
        res = res.with_changes(f"profile {profile.name} has no gpu_gres: runs on CPUs", gpus=0)
    return res, over


def sbatch_argv(step: Step, profile: Profile, work_dir: Path, env_file: Path,
                array_indices: list[int] | None = None, chdir: Path | None = None) -> list[str]:
    """The full sbatch command (without --dependency) for `step`; pure, testable by comparison.

    Resources become --cpus-per-task, --mem=<MiB>M, --time=D-HH:MM:SS, --gres=<gpu_gres>:<n>.
    Logs go to <work_dir>/slurm/logs/<job name>-<job id>[_<task>].out.
    """
    res, over = _resolved(step, profile)
    name = step.job_name or f"a3d-{step.name}"
    logs = Path(work_dir) / "slurm" / "logs"
    if "," in str(env_file):
        raise SlurmError(f"{env_file}: sbatch --export cannot carry a path with a comma; "
                         "use a work_dir without commas")
    argv = ["sbatch", "--parsable", f"--job-name={name}"]
    for key in ("partition", "account", "qos", "constraint"):
        value = over.get(key, getattr(profile, key, None))
        if value:
            argv.append(f"--{key}={value}")
    argv += [f"--cpus-per-task={res.cpus}", f"--mem={res.mem_mb}M",
             f"--time={_time_arg(res.time_min)}"]
    if res.gpus:
        argv.append(f"--gres={profile.gpu_gres}:{res.gpus}")
    if step.items is not None:
        indices = array_indices if array_indices is not None else range(len(step.items))
        argv.append(f"--array={_array_spec(indices)}")
        argv.append(f"--output={logs / (name + '-%A_%a.out')}")
    else:
        argv.append(f"--output={logs / (name + '-%j.out')}")
    argv.append(f"--chdir={chdir or Path.cwd()}")
    argv.append(f"--export=ALL,CELLMAP_SLURM_ENV={env_file}")
    argv += list(profile.extra_sbatch) + list(over.get("extra_sbatch") or ())
    template = TEMPLATE_DIR / step.template if "/" not in step.template else Path(step.template)
    if not template.is_file():
        raise SlurmError(f"sbatch template {template} not found: the templates live in the "
                         "repository's sbatch/ folder; install with `pip install -e .` from a clone")
    argv.append(str(template))
    if step.items is not None:
        argv.append(",".join(step.items))
    argv += [str(a) for a in step.args]
    return argv


def with_dependency(argv: list[str], tokens: list[str]) -> list[str]:
    """`argv` with --dependency=afterok:<t1>:<t2>... inserted after --parsable (no-op if none)."""
    if not tokens:
        return list(argv)
    return argv[:2] + [f"--dependency=afterok:{':'.join(tokens)}"] + argv[2:]


def render_line(step_name: str, argv: list[str]) -> str:
    """One bash line: `<step>=$(sbatch ...)`; `$<step>` dependency tokens stay unquoted."""
    parts = [a if a.startswith("--dependency=") else shlex.quote(a) for a in argv]
    return f"{step_name}=$({' '.join(parts)})"


def launch(argv: list[str]) -> str:
    """Run one sbatch command line and return the job id; raise SlurmError with sbatch's words."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} not found: run on a SLURM login node or install slurm-client "
                         "(or use --dry_run to print the commands)") from exc
    if proc.returncode != 0:
        raise SlurmError(f"sbatch refused the job ({proc.stderr.strip()}): "
                         f"{' '.join(shlex.quote(a) for a in argv)}; check the cluster profile's "
                         "partition/account and the --mem/--time limits of the partition")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {proc.stdout!r}, not a job id: {' '.join(argv)}")
    return job_id


@dataclass(frozen=True)
class JobRecord:
    """One submitted job: its step, id, the array indices it ran and its command line."""

    step: str
    job_id: str
    argv: tuple
    indices: tuple | None = None
    items: tuple | None = None
    log: str = ""
    submitted: str = ""


def _records_path(work_dir: Path) -> Path:
    return Path(work_dir) / "slurm" / RECORDS_NAME


def load_records(work_dir: str | Path) -> list[JobRecord]:
    """Every job ever submitted for this work_dir, oldest first."""
    path = _records_path(Path(work_dir))
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
        return [JobRecord(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()})
                for r in data["jobs"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise SlurmError(f"{path}: unreadable job record ({exc}); move it aside to submit afresh"
                         ) from exc


def _save_records(work_dir: Path, records: list[JobRecord]) -> None:
    data = {"schema": 1, "jobs": [r.__dict__ for r in records]}
    write_text_atomic(_records_path(work_dir), json.dumps(data, indent=1) + "\n")


@dataclass(frozen=True)
class TaskState:
    """State of one job or array task: the scheduler's word, refined by the job's log.

    state: SLURM's job state, or OUT_OF_MEMORY / GPU_OUT_OF_MEMORY when the log names a memory
    failure, or UNKNOWN when neither the scheduler nor an exit-code file knows the job.
    """

    key: str
    state: str
    exit_code: str = ""
    reason: str = ""
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.state in DONE

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def _expand_indices(text: str) -> list[int]:
    out = []
    for part in text.split("%")[0].split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split(":")[0].split("-")
            out += list(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def _query_sacct(job_ids: list[str]) -> dict[str, tuple[str, str, str]]:
    cmd = ["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,Reason", "-j", ",".join(job_ids)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    if proc.returncode != 0:
        return {}
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) < 3:
            continue
        job, state, exit_code = parts[0], parts[1].split()[0], parts[2]
        reason = parts[3] if len(parts) > 3 else ""
        match = re.fullmatch(r"(\d+)_\[(.+)\]", job)
        keys = [f"{match.group(1)}_{i}" for i in _expand_indices(match.group(2))] if match else [job]
        for key in keys:
            found[key] = (state, exit_code, reason)
    return found


def _query_scontrol(job_id: str) -> dict[str, tuple[str, str, str]]:
    try:
        proc = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                              text=True, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in proc.stdout.splitlines():
        rec = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in rec:
            continue
        value = (rec["JobState"], rec.get("ExitCode", ""), rec.get("Reason", ""))
        task = rec.get("ArrayTaskId")
        if task and task != "(null)":
            for i in _expand_indices(task):
                found[f"{rec.get('ArrayJobId', job_id)}_{i}"] = value
        else:
            found[rec.get("JobId", job_id)] = value
    return found


def _log_detail(log: Path) -> tuple[str, str]:
    """(state, line) for the memory failure named in the end of a job log, else ("", "")."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "", ""
    for state, patterns in OOM_PATTERNS.items():
        for line in text.splitlines():
            if any(p in line.lower() for p in patterns):
                return state, line.strip()
    return "", ""


def job_states(records: list[JobRecord], status_dir: Path | None = None) -> dict[str, TaskState]:
    """State of every job (key "<id>") and array task (key "<id>_<index>") in `records`.

    Asks `sacct`, then `scontrol` for jobs sacct does not know or still calls active (no
    accounting, or the database lags behind the controller), then the exit-code files the
    templates write (jobs the scheduler has forgotten). A job whose log shows the memory limit
    is reported as OUT_OF_MEMORY (GPU_OUT_OF_MEMORY for CUDA) whatever the scheduler said.
    """
    ids = [r.job_id for r in records]
    found = _query_sacct(ids) if ids else {}
    for rec in records:
        # scontrol is fresher than the accounting database while the controller knows the job.
        if any(k not in found or found[k][0] in ACTIVE for k in _keys(rec)):
            found.update(_query_scontrol(rec.job_id))
    states = {}
    for rec in records:
        for key in _keys(rec):
            state, exit_code, reason = found.get(key, ("UNKNOWN", "", "not known to the scheduler"))
            if state == "UNKNOWN" and status_dir is not None:
                code_file = Path(status_dir) / f"{key}.exit"
                if code_file.is_file():
                    code = code_file.read_text().strip()
                    state = "COMPLETED" if code == "0" else "FAILED"
                    exit_code, reason = f"{code}:0", f"exit code from {code_file}"
            log = Path(_log_path(rec, key))
            detail = ""
            if not (state in DONE or state in ACTIVE):
                oom, detail = _log_detail(log)
                state = oom or state
            states[key] = TaskState(key, state, exit_code, reason, detail)
    return states


def _log_path(rec: JobRecord, key: str) -> str:
    """The log file of job or array task `key` ("<id>" or "<id>_<index>") from rec's --output."""
    job, _, index = key.partition("_")
    return rec.log.replace("%A", job).replace("%a", index).replace("%j", key)


def _keys(rec: JobRecord) -> list[str]:
    if rec.indices is None:
        return [rec.job_id]
    return [f"{rec.job_id}_{i}" for i in rec.indices]


def _explain(step: str, st: TaskState, item: str | None, rec: JobRecord) -> str:
    what = f"{step}" + (f" [{item}]" if item else "")
    text = f"{what}: job {st.key} {st.state}"
    if st.exit_code:
        text += f" (exit {st.exit_code})"
    if st.state == "OUT_OF_MEMORY":
        mem = next((a.split("=", 1)[1] for a in rec.argv if a.startswith("--mem=")), "?")
        text += (f": exceeded its memory --mem={mem}"
                 + (f" ({st.detail})" if st.detail else "")
                 + f"; raise steps.{step}.mem_mb in the cluster profile or lower the loader workers")
    elif st.state == "GPU_OUT_OF_MEMORY":
        text += (f": the GPU ran out of memory ({st.detail}); lower the batch size or patch (roi) "
                 "size, or ask for a GPU with more memory (gpu_gres type in the cluster profile)")
    elif st.state == "TIMEOUT":
        text += f": hit its --time limit; raise steps.{step}.time_min in the cluster profile"
    elif st.reason and st.reason not in ("None", ""):
        text += f": {st.reason}"
    if rec.log and not st.done:
        text += f"; log {_log_path(rec, st.key)}"
    return text


@dataclass
class SubmitResult:
    """What a submit did: the lines (dry run) or job ids, and the state of earlier jobs."""

    lines: list = field(default_factory=list)
    job_ids: dict = field(default_factory=dict)
    status: list = field(default_factory=list)
    explanations: dict = field(default_factory=dict)


def _latest_by_index(recs: list[JobRecord]) -> dict:
    """For each array index (or None for a plain job): the latest record that ran it."""
    latest = {}
    for rec in recs:
        for idx in (rec.indices if rec.indices is not None else [None]):
            latest[idx] = rec
    return latest


def submit_steps(steps: list[Step], profile: str | Path | Profile, work_dir: str | Path,
                 dry_run: bool = False, resubmit_failed: bool = True,
                 chdir: Path | None = None) -> SubmitResult:
    """Submit a chain of steps with --dependency=afterok, resuming from earlier job records.

    A step (or array task) already COMPLETED is skipped; one still pending or running is waited
    on; one that failed is resubmitted (only the failed tasks of an array), and so is every later
    step that had not completed (pending jobs stuck behind a failed one are cancelled first).
    With `dry_run` nothing is submitted or recorded: `result.lines` are the bash lines
    `<step>=$(sbatch ...)` that would run, dependencies written as `$<step>`.
    """
    profile = load_profile(profile)
    work_dir = Path(work_dir).resolve()
    slurm_dir = work_dir / "slurm"
    (slurm_dir / "logs").mkdir(parents=True, exist_ok=True)
    env_file = write_env_script(profile, slurm_dir)
    records = load_records(work_dir)
    states = job_states(records, slurm_dir / "status") if records else {}
    result = SubmitResult()
    waits: dict[str, list[str]] = {}
    changed = blocked = False
    for step in steps:
        recs = [r for r in records if r.step == step.name]
        latest = _latest_by_index(recs)
        indices = [None] if step.items is None else list(range(len(step.items)))
        to_run, active = [], []
        for idx in indices:
            rec = latest.get(idx)
            if rec is None:
                to_run.append(idx)
                continue
            key = rec.job_id if idx is None else f"{rec.job_id}_{idx}"
            st = states.get(key, TaskState(key, "UNKNOWN"))
            item = None if idx is None else step.items[idx]
            result.status.append(_explain(step.name, st, item, rec))
            if st.done:
                continue
            if st.active and not (changed and st.state == "PENDING"):
                active.append(key)
                continue
            if st.active:  # pending behind a job that is being resubmitted
                if not dry_run:
                    subprocess.run(["scancel", key], capture_output=True, timeout=60)
                result.status.append(f"{step.name}: cancelled pending job {key} (its dependency "
                                     "is being resubmitted)")
            elif not resubmit_failed:
                blocked = True
                continue
            to_run.append(idx)
        if blocked:
            result.status.append(f"{step.name}: failed jobs left as they are (resubmit_failed "
                                 "is off); nothing submitted")
            break
        tokens = [t for name in step.after for t in waits.get(name, [])]
        if to_run:
            changed = True
            array = None if step.items is None else [i for i in to_run if i is not None]
            argv = sbatch_argv(step, profile, work_dir, env_file, array, chdir)
            result.explanations[step.name] = _resolved(step, profile)[0].explanation
            if dry_run:
                result.lines.append(render_line(step.name, with_dependency(argv, tokens)))
                active.append(f"${step.name}")
            else:
                argv = with_dependency(argv, tokens)
                job_id = launch(argv)
                result.job_ids[step.name] = job_id
                log = next(a.split("=", 1)[1] for a in argv if a.startswith("--output="))
                records.append(JobRecord(
                    step=step.name, job_id=job_id, argv=tuple(argv),
                    indices=None if array is None else tuple(array),
                    items=step.items, log=log,
                    submitted=_dt.datetime.now().isoformat(timespec="seconds")))
                _save_records(work_dir, records)
                active.append(job_id)
        waits[step.name] = active
    return result


def status_lines(work_dir: str | Path) -> list[str]:
    """One line per recorded job or array task: step, item, state and, for failures, why."""
    records = load_records(work_dir)
    states = job_states(records, Path(work_dir) / "slurm" / "status")
    lines = []
    for rec in records:
        for i, key in enumerate(_keys(rec)):
            idx = None if rec.indices is None else rec.indices[i]
            item = rec.items[idx] if rec.items is not None and idx is not None else None
            lines.append(_explain(rec.step, states[key], item, rec))
    return lines


JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")


def seg2d_tune_step(tune_args: list[str], workers: int = 4, base_seed: int = 0,
                    resources: Resources | None = None) -> Step:
    """The 2D tuner's array of `workers` Optuna workers sharing one journal-file study.

    tune_args: options of `python -m seg2d tune`; they must hold `--storage <file>.log` (or
    `.jsonl`, `.journal`, `journal:PATH`) and no `--seed` (worker i gets base_seed + i).
    """
    args = [str(a) for a in tune_args]
    storage = next((a.split("=", 1)[1] if "=" in a else (args[i + 1] if i + 1 < len(args) else "")
                    for i, a in enumerate(args) if a.split("=", 1)[0] == "--storage"), None)
    if storage is None or not (storage.startswith("journal:") or storage.endswith(JOURNAL_SUFFIXES)):
        raise SlurmError(f"seg2d tune workers share one study: pass --storage OUT/study.log (an Optuna "
                         f"journal file on a shared filesystem), got {storage!r}")
    if any(a.split("=", 1)[0] == "--seed" for a in args):
        raise SlurmError("do not pass --seed to the tune workers: worker i uses base_seed + i "
                         "(pass --base_seed)")
    seeds = tuple(str(int(base_seed) + i) for i in range(int(workers)))
    res = resources or Resources(cpus=4, mem_mb=16384, time_min=240, gpus=1, explanation=(
        "seg2d tune worker: 4 CPUs, 16 GiB, 1 GPU, 4 h (Cellpose on one GPU; set "
        "steps.seg2d_tune in the cluster profile)"))
    return Step("seg2d_tune", "seg2d_tune_array.sbatch", tuple(args), res, items=seeds,
                job_name="s2d-tune")


def submit_seg2d_tune(tune_args: list[str], workers: int = 4, profile: str | Path = "local",
                      work_dir: str | Path = "seg2d_out", base_seed: int = 0,
                      dry_run: bool = False) -> SubmitResult:
    """Submit (or, with dry_run, return the line of) the tuner's worker array; records in work_dir."""
    step = seg2d_tune_step(tune_args, workers, base_seed)
    return submit_steps([step], profile, work_dir, dry_run=dry_run)


def dask_cluster(profile: str | Path | Profile = "local", jobs: int = 1, cores: int | None = None,
                 memory_mb: int | None = None, time_min: int | None = None,
                 log_dir: str | Path | None = None, **cluster_kwargs):
    """A dask.distributed Client on a dask-jobqueue SLURMCluster of `jobs` SLURM jobs.

    Partition, account, qos, modules, setup lines, env and Python come from the profile; cores,
    memory and time from the profile's `steps.convert` (or the arguments). Worker logs go to
    `log_dir` (default `$CELLMAP_DASK_LOG_DIR`, else `./slurm_logs/dask`; it must be on a
    filesystem the compute nodes share). Close with `client.close(); client.cluster.close()`.
    """
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    from auto3dseg.resources import plan_convert

    prof = load_profile(profile)
    log_dir = Path(log_dir or os.environ.get("CELLMAP_DASK_LOG_DIR") or Path.cwd() / "slurm_logs" / "dask")
    log_dir.mkdir(parents=True, exist_ok=True)
    res, over = _resolved(Step("convert", "convert.sbatch", resources=plan_convert()), prof)
    prologue = [f"module load {m}" for m in prof.modules] + list(prof.setup)
    prologue += [f"export {k}={shlex.quote(v)}" for k, v in sorted(prof.env.items())]
    extra = [f"--qos={prof.qos}"] if prof.qos else []
    extra += list(prof.extra_sbatch) + list(over.get("extra_sbatch") or ())
    kwargs = dict(
        queue=over.get("partition", prof.partition), account=over.get("account", prof.account),
        cores=cores or res.cpus, processes=1, memory=f"{memory_mb or res.mem_mb}MiB",
        walltime=_time_arg(time_min or res.time_min).replace("0-", "", 1),
        job_script_prologue=prologue, python=prof.python_path, job_extra_directives=extra,
        log_directory=str(log_dir))
    kwargs.update(cluster_kwargs)
    cluster = SLURMCluster(**kwargs)
    cluster.scale(jobs=jobs)
    return Client(cluster)


def main() -> None:
    """`python -m auto3dseg.slurm status|seg2d_tune ...` (Fire)."""
    import fire

    def status(work_dir: str = "data/work_dir") -> None:
        """Print one line per recorded job or array task of WORK_DIR (state, and why it failed)."""
        for line in status_lines(work_dir):
            print(line)

    def seg2d_tune(tune: str, workers: int = 4, profile: str = "local",
                   work_dir: str = "seg2d_out", base_seed: int = 0, dry_run: bool = False) -> None:
        """Run `seg2d tune` as an array of WORKERS Optuna workers sharing one journal study.

        Shell: python -m auto3dseg.slurm seg2d_tune --workers 4 --profile local --work_dir OUT \\
                 --tune="--dataset DIR --model cyto3 --n_trials 200 --out OUT --storage OUT/study.log"
        (write --tune= with the equals sign). A rerun resubmits only failed workers (records in WORK_DIR/slurm/jobs.json).
        """
        if not isinstance(tune, str):
            raise SlurmError('pass the tune options as one string with an equals sign: '
                             '--tune="--dataset DIR ... --storage OUT/study.log"')
        result = submit_seg2d_tune(shlex.split(tune), workers, profile, work_dir, base_seed, dry_run)
        for line in result.status:
            print(line, file=sys.stderr)
        for line in result.lines:
            print(line)
        for step, job_id in result.job_ids.items():
            print(f"submitted {step}: job {job_id}", file=sys.stderr)

    fire.Fire({"status": status, "seg2d_tune": seg2d_tune})


if __name__ == "__main__":
    main()
