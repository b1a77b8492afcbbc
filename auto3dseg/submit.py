"""`run_auto3dseg --mode submit`: the staged Auto3DSeg chain as SLURM jobs linked by afterok.

[convert ->] analyze (CPU, large memory) -> generate (1 GPU) -> train (an array job, one bundle
per task) -> ensemble. Job ids are recorded in ``<work_dir>/slurm/jobs.json``; submitting again
resubmits only what failed (for training: only the failed bundles). ``--dry_run`` prints the
sbatch lines instead.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from auto3dseg.resources import TrainMemoryModel, plan_all
from auto3dseg.slurm import SlurmError, Step, SubmitResult, load_profile, submit_steps

__all__ = ["SUBMIT_OPTIONS", "bundle_names", "run_args", "auto3dseg_steps", "submit_pipeline",
           "submit_from_options"]

# Options of `--mode submit` on top of those of `--mode full` (they arrive in Options.extra).
SUBMIT_OPTIONS = {
    "profile": "cluster profile: a name in configs/slurm/ or a YAML path (default local)",
    "dry_run": "print the sbatch lines, one per line, and submit nothing",
    "resubmit_failed": "resubmit failed jobs and array tasks of earlier submits (default True)",
    "convert": "converter options as one string (--convert=\"--output DIR ...\"): add a convert job",
    "loader_workers": "DataLoader workers per training rank, for the memory plan (default 4)",
}


def bundle_names(algos, num_fold: int, gpus_available: bool, insist_swinunetr: bool = False) -> list[str]:
    """`<algo>_<fold>` in array-index order; SwinUNETR is left out without GPUs (as generate does)."""
    names = []
    for algo in algos:
        if algo == "swinunetr" and not gpus_available and not insist_swinunetr:
            print("submit: the cluster profile has no gpu_gres, so swinunetr bundles are not "
                  "generated (pass --insist_swinunetr to try)", file=sys.stderr)
            continue
        names += [f"{algo}_{fold}" for fold in range(num_fold)]
    return names


def run_args(opts) -> list[str]:
    """`--key=value` options of `run_auto3dseg` that every step receives (paths made absolute)."""
    args = [f"--datalist={os.path.abspath(opts.datalist)}",
            f"--work_dir={os.path.abspath(opts.work_dir)}",
            f"--algos={','.join(opts.algos)}"]
    for key in ("num_fold", "num_epochs", "gpus", "engine"):
        value = getattr(opts, key)
        if value is not None:
            args.append(f"--{key}={value}")
    if opts.templates is not None:
        local = os.path.exists(opts.templates)
        args.append(f"--templates={os.path.abspath(opts.templates) if local else opts.templates}")
    args += [f"--config={os.path.abspath(opts.config)}", f"--workers={opts.workers}"]
    args += [f"--{key}" for key in ("force", "insist_swinunetr") if getattr(opts, key)]
    return args


def auto3dseg_steps(args: list[str], bundles: list[str], plan, convert_args: list[str] | None = None,
                    ensemble: bool = True) -> list[Step]:
    """The chain's steps; `args` go to every `run_auto3dseg --mode ...`, `bundles` in index order."""
    steps = []
    if convert_args is not None:
        steps.append(Step("convert", "convert.sbatch", tuple(convert_args), plan.steps["convert"]))
    first_after = ("convert",) if convert_args is not None else ()
    steps += [
        Step("analyze", "analyze.sbatch", tuple(args), plan.steps["analyze"], first_after),
        Step("generate", "generate.sbatch", tuple(args), plan.steps["generate"], ("analyze",)),
        Step("train", "train_array.sbatch", tuple(args), plan.steps["train"], ("generate",),
             items=tuple(bundles)),
    ]
    if ensemble:
        steps.append(Step("ensemble", "ensemble.sbatch", tuple(args), plan.steps["ensemble"],
                          ("train",)))
    return steps


def submit_pipeline(args: list[str], bundles: list[str], profile="local", work_dir="data/work_dir",
                    datalist=None, convert_args=None, dry_run: bool = False,
                    resubmit_failed: bool = True, num_epochs: int = 300, loader_workers: int = 4,
                    ranks: int = 1, n_classes: int = 1, analyze_workers: int = 1,
                    analyze_engine: str = "ours", algos=(),
                    ensemble: bool = True,
                    out=print) -> SubmitResult:
    """Plan resources from the datalist, then submit (or print) the chain.

    The state of earlier jobs and the planner's reasoning go to stderr; with `dry_run` only the
    sbatch lines go to `out`, one per line.
    """
    model = TrainMemoryModel(n_classes=n_classes, workers=loader_workers, ranks=ranks)
    plan = plan_all(datalist, n_bundles=len(bundles), model=model, num_epochs=num_epochs,
                    analyze_workers=analyze_workers, analyze_engine=analyze_engine, algos=algos)
    steps = auto3dseg_steps(args, bundles, plan, convert_args, ensemble)
    result = submit_steps(steps, profile, work_dir, dry_run=dry_run, resubmit_failed=resubmit_failed)
    for line in result.status:
        print(line, file=sys.stderr)
    for name, why in result.explanations.items():
        print(f"[{name}] {why}", file=sys.stderr)
    for note in plan.notes:
        print(note, file=sys.stderr)
    if dry_run:
        for line in result.lines:
            out(line)
    else:
        for step, job_id in result.job_ids.items():
            print(f"submitted {step}: job {job_id}", file=sys.stderr)
        if not result.job_ids:
            print("nothing submitted: every step completed or is still queued", file=sys.stderr)
    return result


def submit_from_options(opts) -> SubmitResult:
    """`run_auto3dseg --mode submit`: `opts` is run_auto3dseg's Options (submit keys in opts.extra)."""
    extra = dict(opts.extra)
    unknown = set(extra) - set(SUBMIT_OPTIONS)
    if unknown:
        raise SlurmError(f"--mode submit: unknown option(s) {sorted(unknown)}; submit takes the "
                         f"options of --mode full plus {sorted(SUBMIT_OPTIONS)}")
    profile = load_profile(extra.get("profile", "local"))
    convert = extra.get("convert")
    convert_args = None if convert in (None, False) else (
        [] if convert is True else shlex.split(str(convert)))
    datalist = Path(opts.datalist)
    gpus_available = bool(profile.gpu_gres)
    n_classes, num_fold, has_testing = 1, opts.num_fold, True
    if datalist.is_file():
        from auto3dseg.rundata import load_run_datalist

        dl = load_run_datalist(str(datalist), check_files=False)
        n_classes = max(1, len(dl.class_names))
        num_fold = num_fold or len(dl.folds) or min(5, len(dl.cases))
        has_testing = bool(dl.testing)
    elif convert_args is None:
        raise SlurmError(f"--datalist {datalist} does not exist: convert first, or add a convert "
                         "job with --convert=\"<converter options>\" (and --num_fold)")
    elif num_fold is None:
        raise SlurmError("--convert: the datalist does not exist yet, so pass --num_fold to say "
                         "how many training tasks per algorithm to submit")
    bundles = bundle_names(opts.algos, int(num_fold), gpus_available, opts.insist_swinunetr)
    if not bundles:
        raise SlurmError(f"--algos {','.join(opts.algos)}: no bundle to train on profile "
                         f"{profile.name} (no GPUs for swinunetr)")
    train_gpus = int((profile.steps.get("train") or {}).get("gpus", 1)) if gpus_available else 1
    return submit_pipeline(
        run_args(opts), bundles, profile=profile, work_dir=opts.work_dir, datalist=datalist,
        convert_args=convert_args, dry_run=bool(extra.get("dry_run", False)),
        resubmit_failed=bool(extra.get("resubmit_failed", True)),
        num_epochs=int(opts.num_epochs or 300), loader_workers=int(extra.get("loader_workers", 4)),
        ranks=max(1, train_gpus), n_classes=n_classes, analyze_workers=opts.workers,
        analyze_engine=opts.engine or opts.run_config().get("analyze", {}).get("engine", "ours"),
        algos=opts.algos, ensemble=has_testing)
