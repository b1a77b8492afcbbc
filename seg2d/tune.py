"""The `tune` pipeline: load, calibrate, search with Optuna on cached flows, re-segment, write the report."""

import platform
import time
from pathlib import Path
from typing import Dict, Optional

import optuna

from seg2d.align import aligned_frames, calibrate_dataset, model_baselines, read_baselines
from seg2d.cache import FlowCache
from seg2d.calibrate import IDENTITY
from seg2d.config import load_config
from seg2d.io import load_dataset, mask_dtype, write_json, write_text, write_tiff
from seg2d.metrics import OBJECTIVES, frame_scores, mean_scores
from seg2d.model import load_model
from seg2d.objective import Objective, SearchSpace
from seg2d.report import notes_markdown, plot_history, plot_importances, plot_overlays, write_trials_csv
from seg2d.study import finished_trials, open_study, run_study

__all__ = ["tune", "versions", "make_pruner"]

SCHEMA_VERSION = 1


def versions() -> Dict[str, Optional[str]]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("cellpose", "optuna", "torch", "numpy", "scikit-image", "cellmap-auto3dseg"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def make_pruner(setting: str, cached: bool) -> optuna.pruners.BasePruner:
    """`auto`: a median pruner (per-frame running mean) only when flows are not cached, i.e. when each trial
    pays for the network; `median`: always; `none`: never."""
    if setting == "median" or (setting == "auto" and not cached):
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def tune(dataset: str, model: str, n_trials: int, out: str, config: Optional[str] = None,
         storage: Optional[str] = None, study_name: Optional[str] = None, seed: Optional[int] = None,
         objective: Optional[str] = None, calibrate: Optional[bool] = None, baseline_masks: Optional[str] = None,
         calibration_frames: Optional[int] = None, per_frame: Optional[bool] = None,
         max_shift: Optional[int] = None, cache_dir: Optional[str] = None, cache_memory: Optional[bool] = None,
         progress: bool = True) -> dict:
    """Tune Cellpose parameters on `dataset` (DIR/images/*.tif + DIR/masks/*.tif) and write into `out`:
    best_params.json, calibration.json, trials.csv, notes.md, history.png, importances.png, overlays.png,
    masks/<frame>.tif. `storage` (default OUT/study.db) resumes a study; a .log path is a journal file for
    many processes. Returns the best_params.json content."""
    cfg = load_config(config, **{
        "objective": objective, "study.name": study_name, "study.seed": seed, "calibration.enabled": calibrate,
        "calibration.calibration_frames": calibration_frames, "calibration.per_frame": per_frame,
        "calibration.max_shift_px": max_shift, "cache.disk_dir": cache_dir, "cache.memory": cache_memory})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_dataset(dataset)
    adapter = load_model(model, tile_px=cfg["tiling"]["tile_px"], tile_overlap_px=cfg["tiling"]["overlap_px"],
                         progress=progress)
    cache = FlowCache(adapter, memory=cfg["cache"]["memory"], disk_dir=cfg["cache"]["disk_dir"])
    space = SearchSpace(cfg["search_space"], adapter.defaults())

    cal_cfg = cfg["calibration"]
    if cal_cfg["enabled"]:
        if baseline_masks:
            baselines, source = read_baselines(frames, baseline_masks), f"baseline masks {baseline_masks}"
        else:
            baselines, source = model_baselines(frames, adapter, cache), f"model {model} at Cellpose defaults"
        calibration = calibrate_dataset(frames, baselines, cal_cfg["max_shift_px"], cal_cfg["calibration_frames"],
                                        cal_cfg["per_frame"], source=source)
    else:
        calibration = IDENTITY
    write_json(out / "calibration.json", calibration.to_json())
    tune_frames = aligned_frames(frames, calibration)

    cached = bool(cfg["cache"]["memory"] or cfg["cache"]["disk_dir"])
    storage = storage or str(out / "study.db")
    study = open_study(storage, cfg["study"]["name"], cfg["study"]["seed"], cfg["study"]["n_startup_trials"],
                       make_pruner(cfg["study"]["pruner"], cached))
    obj = Objective(tune_frames, cache, space, cfg["objective"], prune=not isinstance(study.pruner,
                                                                                     optuna.pruners.NopPruner))
    t0 = time.perf_counter()
    n_run = run_study(study, obj, n_trials, space.default_trial(), progress=progress)
    seconds = time.perf_counter() - t0

    default_params = {"bsize": space.defaults["bsize"], **space.default_trial()}
    best_params = {"bsize": space.defaults["bsize"], **study.best_trial.params}
    obj.prune = False
    default_frames = obj.evaluate(default_params)
    best_preds = [obj.predict(f, best_params) for f in tune_frames]

    best_frames = [frame_scores(f.gt, p) for f, p in zip(tune_frames, best_preds)]
    default_scores, best_scores = mean_scores(default_frames), mean_scores(best_frames)
    for f, pred in zip(tune_frames, best_preds):
        write_tiff(out / "masks" / f"{f.name}.tif", mask_dtype(pred))

    n_pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    summary = {
        "schema_version": SCHEMA_VERSION,
        **{k: best_params[k] for k in ("diameter", "flow_threshold", "cellprob_threshold", "min_size", "niter",
                                       "bsize")},
        "objective": cfg["objective"],
        "objective_key": OBJECTIVES[cfg["objective"]],
        "best_value": float(best_scores[OBJECTIVES[cfg["objective"]]]),
        "mean_dice": best_scores["dice"], "mean_iou": best_scores["iou"], "mean_f1_50": best_scores["f1_50"],
        "mean_f1_75": best_scores["f1_75"], "mean_f1_90": best_scores["f1_90"],
        "mean_ap_50": best_scores["ap_50"], "mean_ap_75": best_scores["ap_75"], "mean_ap_90": best_scores["ap_90"],
        "best_params": best_params,
        "default_params": default_params,
        "default_value": float(default_scores[OBJECTIVES[cfg["objective"]]]),
        "default_scores": default_scores,
        "best_scores": best_scores,
        "calibration": calibration.to_json(),
        "model": adapter.describe(),
        "versions": versions(),
        "dataset": str(Path(dataset).resolve()),
        "n_frames": len(tune_frames),
        "study_name": cfg["study"]["name"],
        "storage": storage,
        "seed": cfg["study"]["seed"],
        "best_trial_number": study.best_trial.number,
        "n_trials_total": finished_trials(study),
        "n_trials_run": n_run,
        "n_pruned": n_pruned,
        "cache": cache.stats(),
        "timing": {"search_seconds": round(seconds, 3),
                   "trials_per_minute": (60.0 * n_run / seconds) if seconds > 0 and n_run else 0.0},
    }
    write_json(out / "best_params.json", summary)
    write_trials_csv(study, out / "trials.csv")
    per_frame_rows = [{"name": f.name, **s} for f, s in zip(tune_frames, best_frames)]
    write_text(out / "notes.md", notes_markdown(summary, default_scores, best_scores, per_frame_rows))
    plot_history(study, out / "history.png")
    plot_importances(study, out / "importances.png")
    n_overlay = int(cfg["report"]["overlay_frames"])
    plot_overlays([{"name": f.name, "image": f.image, "gt": f.gt, "pred": p}
                   for f, p in list(zip(tune_frames, best_preds))[:n_overlay]], out / "overlays.png")
    return summary
