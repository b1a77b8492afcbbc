"""Segmentation scores on label arrays (pure numpy + scipy matching): Dice, IoU, instance F1/AP, F-beta."""

from typing import Dict, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "OBJECTIVES",
    "IOU_THRESHOLDS",
    "relabel_sequential",
    "foreground_dice",
    "foreground_iou",
    "iou_matrix",
    "match_counts",
    "frame_scores",
    "mean_scores",
]

IOU_THRESHOLDS = (0.5, 0.75, 0.9)
#: objective name -> key in frame_scores(); precision/recall/f2 are instance-level at IoU 0.5.
OBJECTIVES = {
    "dice": "dice",
    "iou": "iou",
    "f1": "f1_50",
    "precision": "precision_50",
    "recall": "recall_50",
    "f2": "f2_50",
    "ap50": "ap_50",
}


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n in order of value (0 stays background); gaps are removed."""
    labels = np.asarray(labels)
    values, inverse = np.unique(labels, return_inverse=True)
    offset = 0 if values[0] == 0 else 1
    return (inverse.reshape(labels.shape) + offset).astype(np.int32)


def foreground_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Binary foreground Dice 2|A∩B| / (|A|+|B|) of label arrays (y, x); 1.0 when both are empty."""
    a, b = np.asarray(gt) > 0, np.asarray(pred) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def foreground_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Binary foreground IoU |A∩B| / |A∪B|; 1.0 when both are empty."""
    a, b = np.asarray(gt) > 0, np.asarray(pred) > 0
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every GT object (rows, labels 1..n after relabelling) with every predicted object (columns)."""
    g, p = relabel_sequential(gt).ravel(), relabel_sequential(pred).ravel()
    n_g, n_p = int(g.max(initial=0)), int(p.max(initial=0))
    overlap = np.bincount(g.astype(np.int64) * (n_p + 1) + p, minlength=(n_g + 1) * (n_p + 1))
    overlap = overlap.reshape(n_g + 1, n_p + 1).astype(np.float64)
    area_g, area_p = overlap.sum(axis=1, keepdims=True), overlap.sum(axis=0, keepdims=True)
    union = area_g + area_p - overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, overlap / union, 0.0)
    return iou[1:, 1:]


def match_counts(iou: np.ndarray, threshold: float) -> Dict[str, int]:
    """TP/FP/FN from a one-to-one (Hungarian) matching that maximises matches with IoU >= threshold."""
    n_g, n_p = iou.shape
    if n_g == 0 or n_p == 0:
        return {"tp": 0, "fp": n_p, "fn": n_g}
    ok = iou >= threshold
    # cost: prefer pairs above threshold, tie-break by IoU (stardist/Cellpose-style matching)
    cost = -(ok.astype(np.float64) + iou / (2.0 * max(n_g, n_p)))
    rows, cols = linear_sum_assignment(cost)
    tp = int(ok[rows, cols].sum())
    return {"tp": tp, "fp": n_p - tp, "fn": n_g - tp}


def _ratio(num: float, den: float, both_empty: bool) -> float:
    """num/den; an empty denominator scores 1 only when GT and prediction are both empty, else 0."""
    if den > 0:
        return float(num / den)
    return 1.0 if both_empty else 0.0


def frame_scores(gt: np.ndarray, pred: np.ndarray, thresholds: Sequence[float] = IOU_THRESHOLDS) -> Dict[str, float]:
    """All scores for one frame. gt, pred: label arrays (y, x), 0 = background.

    Keys: dice, iou (foreground); n_gt, n_pred; per threshold t (suffix 50, 75, 90): tp_, fp_, fn_,
    ap_ = TP/(TP+FP+FN) (Cellpose's "AP"), f1_ = 2TP/(2TP+FP+FN), precision_, recall_, f2_ (F-beta, beta 2).
    A ratio with an empty denominator is 1 when GT and prediction are both empty, else 0 (e.g. precision
    is 0 when nothing is predicted but GT has objects).
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"gt shape {gt.shape} != prediction shape {pred.shape}")
    iou = iou_matrix(gt, pred)
    out = {"dice": foreground_dice(gt, pred), "iou": foreground_iou(gt, pred),
           "n_gt": int(iou.shape[0]), "n_pred": int(iou.shape[1])}
    both_empty = iou.shape == (0, 0)
    for t in thresholds:
        c = match_counts(iou, t)
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        k = f"{int(round(t * 100))}"
        precision, recall = _ratio(tp, tp + fp, both_empty), _ratio(tp, tp + fn, both_empty)
        out.update({
            f"tp_{k}": tp, f"fp_{k}": fp, f"fn_{k}": fn,
            f"ap_{k}": _ratio(tp, tp + fp + fn, both_empty),
            f"f1_{k}": _ratio(2 * tp, 2 * tp + fp + fn, both_empty),
            f"precision_{k}": precision,
            f"recall_{k}": recall,
            f"f2_{k}": _ratio(5 * tp, 5 * tp + 4 * fn + fp, both_empty),
        })
    return out


def mean_scores(per_frame: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """Mean of each score over frames (counts are summed instead)."""
    if not per_frame:
        return {}
    out = {}
    for key in per_frame[0]:
        values = [f[key] for f in per_frame]
        is_count = key.startswith(("tp_", "fp_", "fn_", "n_"))
        out[key] = float(np.sum(values)) if is_count else float(np.mean(values))
    return out
