"""Tuning outputs: trials.csv, notes.md (default vs best in numbers), PNG plots and GT/prediction overlays."""

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from seg2d.io import write_atomic, write_text

__all__ = ["write_trials_csv", "plot_history", "plot_importances", "plot_overlays", "notes_markdown"]

_SCORE_LABELS = {
    "dice": "foreground Dice", "iou": "foreground IoU", "f1_50": "instance F1 @ IoU 0.5",
    "f1_75": "instance F1 @ IoU 0.75", "f1_90": "instance F1 @ IoU 0.9", "ap_50": "AP @ 0.5 (TP/(TP+FP+FN))",
    "ap_75": "AP @ 0.75", "ap_90": "AP @ 0.9", "precision_50": "precision @ 0.5", "recall_50": "recall @ 0.5",
    "f2_50": "F2 @ 0.5",
}


def write_trials_csv(study, path) -> Path:
    """All trials of `study` (parameters, value, state, user attrs) as CSV, written atomically."""
    df = study.trials_dataframe()
    return write_text(path, df.to_csv(index=False))


def _save_fig(fig, path) -> Path:
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, bbox_inches="tight"), suffix=".png")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_history(study, path) -> Optional[Path]:
    """Optimisation history PNG (objective per trial and best so far)."""
    plt = _plt()
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot_optimization_history(study)
    fig = ax.figure
    try:
        return _save_fig(fig, path)
    finally:
        plt.close(fig)


def plot_importances(study, path) -> Optional[Path]:
    """Parameter importance PNG (Optuna's default evaluator); None when the study cannot rank parameters
    (fewer than two complete trials, or no variation)."""
    plt = _plt()
    from optuna.visualization.matplotlib import plot_param_importances

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ax = plot_param_importances(study)
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
    fig = ax.figure
    try:
        return _save_fig(fig, path)
    finally:
        plt.close(fig)


def plot_overlays(items: Sequence[Dict[str, object]], path) -> Optional[Path]:
    """One PNG with a row per frame: image, GT outlines (green) and prediction outlines (magenta).
    items: dicts with name, image (y, x), gt (y, x labels), pred (y, x labels)."""
    if not items:
        return None
    plt = _plt()
    from skimage.segmentation import find_boundaries

    fig, axes = plt.subplots(len(items), 1, figsize=(5, 5 * len(items)), squeeze=False)
    for ax, it in zip(axes[:, 0], items):
        img = np.asarray(it["image"], dtype=np.float32)
        lo, hi = np.percentile(img, (1, 99))
        rgb = np.repeat(np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=2)
        rgb[find_boundaries(it["gt"], mode="inner")] = (0.1, 0.9, 0.1)
        rgb[find_boundaries(it["pred"], mode="inner")] = (0.95, 0.1, 0.95)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(f"{it['name']}: GT green, prediction magenta")
        ax.axis("off")
    try:
        return _save_fig(fig, path)
    finally:
        plt.close(fig)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def notes_markdown(summary: dict, default_scores: Dict[str, float], best_scores: Dict[str, float],
                   per_frame: List[Dict[str, object]]) -> str:
    """notes.md: what was tuned, on what, and the gain of the best trial over Cellpose's defaults."""
    d, b = summary["default_params"], summary["best_params"]
    lines = [
        "# seg2d tuning notes",
        "",
        f"- dataset: `{summary['dataset']}` ({summary['n_frames']} frames)",
        f"- model: `{summary['model']['spec']}` (sha256 {summary['model']['sha256'][:12]}…, "
        f"{summary['versions']['cellpose']} cellpose)",
        f"- objective: **{summary['objective']}** (mean over frames); study `{summary['study_name']}` in "
        f"`{summary['storage']}`, {summary['n_trials_total']} finished trials ({summary['n_trials_run']} run now, "
        f"{summary['n_pruned']} pruned)",
        f"- calibration: transform `{summary['calibration']['transform']}`, shift (dy, dx) = "
        f"{summary['calibration']['shift']} px ({summary['calibration']['source']})",
        f"- speed: {summary['timing']['trials_per_minute']:.1f} trials/min; network runs "
        f"{summary['cache']['network_runs']} ({summary['cache']['network_seconds']} s), memory cache hits "
        f"{summary['cache']['memory_hits']}, disk cache hits {summary['cache']['disk_hits']}",
        "",
        "## Parameters",
        "",
        "| parameter | Cellpose default (trial 0) | best |",
        "|---|---|---|",
    ]
    for k in b:
        lines.append(f"| {k} | {_fmt(d.get(k))} | {_fmt(b[k])} |")
    lines += ["", "## Scores (mean over frames)", "", "| score | default | best | gain |", "|---|---|---|---|"]
    for k, label in _SCORE_LABELS.items():
        lines.append(f"| {label} | {default_scores[k]:.4f} | {best_scores[k]:.4f} | "
                     f"{best_scores[k] - default_scores[k]:+.4f} |")
    lines += ["", "## Per frame (best parameters)", "", "| frame | Dice | IoU | F1@0.5 | GT objects | predicted |",
              "|---|---|---|---|---|---|"]
    for f in per_frame:
        lines.append(f"| {f['name']} | {f['dice']:.4f} | {f['iou']:.4f} | {f['f1_50']:.4f} | {f['n_gt']} | "
                     f"{f['n_pred']} |")
    lines += ["", "Foreground Dice cannot see merged or split cells; read it together with instance F1.", ""]
    return "\n".join(lines)
