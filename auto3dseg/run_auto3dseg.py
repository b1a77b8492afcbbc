"""run_auto3dseg: MONAI Auto3DSeg on converted CellMap crops (analyze, generate, train, ensemble, predict, full).

Shell::

    run_auto3dseg --mode analyze --workers 2                     # data/nifti/datalist.json -> data/work_dir
    run_auto3dseg --mode full --templates /path/to/algorithm_templates --algos segresnet
    run_auto3dseg --mode train --num_epochs 2                    # smoke run; resumes failed bundles
    run_auto3dseg --mode predict --input /path/to/nifti_folder --output preds/
    run_auto3dseg --mode predict --input data/nifti/images --grids data/nifti/conversion_report.json
    run_auto3dseg --mode evaluate --truth ground_truth.zarr --prediction preds/submission.zarr --out scores/
    python auto3dseg/run_auto3dseg.py --mode analyze             # same, without installing

Python::

    from auto3dseg.run_auto3dseg import run
    run(mode="analyze", datalist="data/nifti/datalist.json", work_dir="data/work_dir")

Each mode is one function ``mode_<name>(opts)`` registered in :data:`MODES`; other parts add modes there
(``evaluate``, ``submit``). Options a mode does not know arrive in ``opts.extra``.
"""

from __future__ import annotations

if __name__ == "__main__" and __package__ in (None, ""):  # `python auto3dseg/run_auto3dseg.py`
    import os as _os
    import sys as _sys

    _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))

import logging
import os
import re
from dataclasses import dataclass, field

from auto3dseg.errors import Auto3DSegError
from cellmap.errors import CellMapError

__all__ = ["Options", "MODES", "run", "main", "DEFAULT_WORK_DIR", "DEFAULT_ALGOS"]

DEFAULT_WORK_DIR = "data/work_dir"
DEFAULT_ALGOS = ("segresnet", "swinunetr")

logger = logging.getLogger("auto3dseg")


@dataclass
class Options:
    """Typed command-line options shared by all modes (paths as given; the mode resolves them)."""

    mode: str = "full"
    datalist: str = "data/nifti/datalist.json"
    work_dir: str = DEFAULT_WORK_DIR
    algos: tuple = DEFAULT_ALGOS
    num_fold: int | None = None
    num_epochs: int | None = None
    templates: str | None = None
    config: str = "configs/auto3dseg.yaml"
    gpus: str | None = None
    workers: int = 1
    force: bool = False
    engine: str | None = None
    input: str | None = None
    output: str | None = None
    bundles: tuple | None = None
    insist_swinunetr: bool = False
    extra: dict = field(default_factory=dict)

    def run_config(self) -> dict:
        from auto3dseg.runconfig import load_run_config

        return load_run_config(self.config)


def _names(value) -> tuple:
    """Fire gives 'a b', 'a,b', ('a', 'b') or a single name; normalise to a tuple of names."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return tuple(v for v in re.split(r"[,\s]+", str(value)) if v)


def mode_analyze(opts: Options) -> dict:
    """Per-case statistics, MONAI summary, corrected per-class summary and datastats_report.md."""
    from auto3dseg.analyze import analyze

    cfg = opts.run_config()["analyze"]
    paths = analyze(
        opts.datalist,
        opts.work_dir,
        workers=int(opts.workers),
        engine=opts.engine or cfg["engine"],
        slab_voxels=int(cfg["slab_voxels"]),
    )
    print(f"Data statistics: {paths['datastats']}\nReport: {paths.get('report')}")
    return paths


def mode_generate(opts: Options, keep_trained: bool = False) -> list:
    """Bundles ``<algo>_<fold>`` from the datalist, config and templates (refuses over trained work)."""
    from auto3dseg.bundles import generate, resolve_templates
    from auto3dseg.rundata import load_run_datalist

    written = generate(
        load_run_datalist(opts.datalist),
        opts.work_dir,
        opts.algos,
        resolve_templates(opts.templates),
        opts.run_config(),
        num_fold=opts.num_fold,
        force=opts.force,
        keep_trained=keep_trained,
        insist_swinunetr=opts.insist_swinunetr,
    )
    print("Generated bundles:\n  " + "\n  ".join(written) if written else "No bundles generated.")
    return written


def mode_train(opts: Options) -> dict:
    """Train untrained bundles (resumes after a failure); run overrides never persist."""
    from auto3dseg.bundles import train

    scores = train(opts.work_dir, opts.run_config(), num_epochs=opts.num_epochs, gpus=opts.gpus, bundles=opts.bundles)
    for name, score in scores.items():
        print(f"{name}: best validation Dice {score:.4f}")
    return scores


def mode_ensemble(opts: Options) -> list:
    """Ensemble of trained bundles over the datalist's testing list -> work_dir/ensemble_output."""
    from auto3dseg.bundles import predict

    outs = predict(opts.work_dir, opts.run_config(), inputs=None, output_dir=opts.output, force=opts.force)
    print(f"{len(outs)} prediction(s) in {os.path.dirname(outs[0]) if outs else '-'}")
    if outs:
        _export_submission(opts, os.path.dirname(outs[0]))
    return outs


def mode_predict(opts: Options) -> list:
    """Ensemble prediction for --input (a NIfTI folder, a datalist's testing list, one image) -> --output."""
    from auto3dseg.bundles import predict

    output = opts.output or os.path.join(opts.work_dir, "predictions")
    outs = predict(opts.work_dir, opts.run_config(), inputs=opts.input, output_dir=output, force=opts.force)
    print(f"{len(outs)} prediction(s) in {output}")
    _export_submission(opts, output)
    return outs


def _export_submission(opts: Options, pred_dir: str):
    """predict: also write submission.zarr + zip when crop grids are known (--grids, else the
    conversion_report.json beside the datalist); --submission names the zarr."""
    from auto3dseg.export import export_for_run

    sub = export_for_run(pred_dir, opts.datalist, grids=opts.extra.get("grids"), out=opts.extra.get("submission"))
    if sub is None:
        print("No crop grids for these predictions: no submission.zarr (pass --grids conversion_report.json, "
              "test_crop_manifest.csv or datasplit.csv)")
    else:
        print(f"Submission: {sub['zarr']} ({len(sub['arrays'])} arrays) and {sub['zip']}")
    return sub


def mode_evaluate(opts: Options) -> dict:
    """CellMap scores of --prediction against --truth (zarr crop<ID>/<class> hierarchies or NIfTI folders)
    -> --out/scores.csv, scores.md, scores.png."""
    from auto3dseg.export import evaluate_paths

    ex = opts.extra
    missing = [k for k in ("truth", "prediction") if not ex.get(k)]
    if missing:
        raise Auto3DSegError(f"--mode evaluate needs --{' and --'.join(missing)} (zarr crop<ID>/<class> or NIfTI folders)")
    out = ex.get("out") or opts.output or os.path.join(opts.work_dir, "evaluation")
    paths = evaluate_paths(ex["truth"], ex["prediction"], out, datalist=opts.datalist, classes=ex.get("classes"),
                           crops=_names(ex.get("crops")) or None)
    print("Scores: " + ", ".join(str(p) for p in paths.values()))
    return paths


def mode_full(opts: Options) -> dict:
    """analyze (kept when current) -> generate (keeps trained bundles) -> train (resumes) -> ensemble."""
    from auto3dseg.analyze import analysis_is_current
    from auto3dseg.bundles import resolve_templates
    from auto3dseg.rundata import load_run_datalist

    resolve_templates(opts.templates)  # fail before hours of work when templates are unreachable
    if analysis_is_current(opts.datalist, opts.work_dir) and not opts.force:
        print(f"Analysis in {opts.work_dir} is current (same cases, newer than the data): kept")
        out = {"analyze": None}
    else:
        out = {"analyze": mode_analyze(opts)}
    out["generate"] = mode_generate(opts, keep_trained=True)
    out["train"] = mode_train(opts)
    out["ensemble"] = mode_ensemble(opts) if load_run_datalist(opts.datalist).testing else []
    return out


def mode_submit(opts: Options):
    """SLURM: the options of ``full`` plus --profile NAME|YAML, --dry_run, --resubmit_failed, --convert="...",
    --loader_workers; submits analyze -> generate -> train array (one bundle per task) -> ensemble with
    --dependency=afterok, records job ids in work_dir/slurm/jobs.json, resubmits only failed jobs/tasks on rerun;
    --dry_run prints the sbatch lines. See auto3dseg.submit."""
    from auto3dseg.submit import submit_from_options

    return submit_from_options(opts)


MODES = {
    "analyze": mode_analyze,
    "generate": mode_generate,
    "train": mode_train,
    "ensemble": mode_ensemble,
    "predict": mode_predict,
    "full": mode_full,
    "submit": mode_submit,
    "evaluate": mode_evaluate,
}


def run(
    mode: str = "full",
    datalist: str = "data/nifti/datalist.json",
    work_dir: str = DEFAULT_WORK_DIR,
    algos=DEFAULT_ALGOS,
    num_fold: int | None = None,
    num_epochs: int | None = None,
    templates: str | None = None,
    config: str = "configs/auto3dseg.yaml",
    gpus=None,
    workers: int = 1,
    force: bool = False,
    engine: str | None = None,
    input: str | None = None,  # noqa: A002 - the CLI option name
    output: str | None = None,
    bundles=None,
    insist_swinunetr: bool = False,
    **extra,
):
    """Run one mode.

    Args:
        mode: analyze | generate | train | ensemble | predict | full (and modes other parts register). submit (SLURM chain): the options of full plus --profile NAME|YAML, --dry_run, --resubmit_failed, --convert="<converter options>", --loader_workers N.
        datalist: the converter's datalist.json (default data/nifti/datalist.json).
        work_dir: Auto3DSeg work folder (default data/work_dir).
        algos: template names, e.g. ``segresnet,swinunetr`` (default both; SwinUNETR is skipped without a GPU).
        num_fold: folds to generate/train (default: every fold of the datalist).
        num_epochs: epochs for this training run only (not written into bundle configs).
        templates: folder or URL of Auto3DSeg algorithm templates (default $AUTO3DSEG_TEMPLATES, else MONAI's
            release URL, which needs network).
        config: settings YAML (default configs/auto3dseg.yaml).
        gpus: CUDA devices for training, e.g. ``0,1`` (default all visible).
        workers: parallel processes for analyze.
        force: regenerate over trained bundles (moved to work_dir/superseded/), rewrite existing predictions.
        engine: analyze engine ``ours`` (streamed, default) or ``monai`` (plain DataAnalyzer).
        input: predict: a folder of NIfTI images, a datalist (its ``testing``) or one image.
        output: predict/ensemble output folder.
        bundles: train only these bundles (e.g. ``segresnet_0``; for array jobs).
        insist_swinunetr: generate/train SwinUNETR even without a CUDA GPU.
    """
    if mode not in MODES:
        raise Auto3DSegError(f"--mode {mode!r}: choose one of {', '.join(MODES)}")
    opts = Options(
        mode=mode,
        datalist=os.fspath(datalist),
        work_dir=os.fspath(work_dir),
        algos=_names(algos),
        num_fold=None if num_fold is None else int(num_fold),
        num_epochs=None if num_epochs is None else int(num_epochs),
        templates=None if templates is None else os.fspath(templates),
        config=os.fspath(config),
        gpus=None if gpus is None else ",".join(_names(gpus)),
        workers=int(workers),
        force=bool(force),
        engine=engine,
        input=input,
        output=output,
        bundles=_names(bundles) or None,
        insist_swinunetr=bool(insist_swinunetr),
        extra=dict(extra),
    )
    return MODES[mode](opts)


def main(argv=None):
    """Console script ``run_auto3dseg``: Fire over :func:`run`; user errors print one message and exit 2."""
    import sys

    import fire

    args = list(sys.argv[1:] if argv is None else argv)
    if "--help" in args or "-h" in args:  # run() takes **extra, so Fire would pass help=True as an option
        print(__doc__.strip() + "\n\nOptions (run_auto3dseg --name value):\n" + run.__doc__.split("Args:", 1)[1])
        print("Modes: " + ", ".join(MODES))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fire.Fire(run, command=args, serialize=lambda _result: None)
    except CellMapError as err:  # the root of Auto3DSegError and of the cellmap data errors
        print(f"run_auto3dseg: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
