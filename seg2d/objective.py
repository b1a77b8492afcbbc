"""The Optuna objective: suggest Cellpose parameters, recompute masks from cached flows, score against GT."""

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import optuna

from seg2d.metrics import OBJECTIVES, frame_scores, mean_scores
from seg2d.model import masks_from_flows

__all__ = ["TuneFrame", "SearchSpace", "Objective", "REPORT_KEYS"]

#: Scores stored on every trial (user attrs) and reported default vs best.
REPORT_KEYS = ("dice", "iou", "f1_50", "f1_75", "f1_90", "ap_50", "ap_75", "ap_90", "precision_50",
               "recall_50", "f2_50")


@dataclass(frozen=True)
class TuneFrame:
    """A frame ready for tuning: `image` float32 (y, x) and `gt` int32 labels (y, x) already calibrated."""

    name: str
    image: np.ndarray
    gt: np.ndarray


class SearchSpace:
    """The search space of `config["search_space"]`, widened to contain Cellpose's `defaults`
    (so that trial 0 can be the defaults)."""

    def __init__(self, space: dict, defaults: Dict[str, float]):
        self.defaults = dict(defaults)
        self.diameters = sorted({round(float(d), 2) for d in space["diameter"]} | {float(defaults["diameter"])})
        self.niters = sorted({int(n) for n in space["niter"]} | {int(defaults["niter"])})
        self.bsizes = (sorted({int(b) for b in space["bsize"]} | {int(defaults["bsize"])})
                       if space.get("bsize") else None)
        self.ranges = {}
        for key in ("flow_threshold", "cellprob_threshold", "min_size"):
            lo, hi = space[key]
            cast = int if key == "min_size" else float
            self.ranges[key] = (cast(min(lo, defaults[key])), cast(max(hi, defaults[key])))

    def suggest(self, trial) -> Dict[str, float]:
        p = {"diameter": trial.suggest_categorical("diameter", self.diameters)}
        p["flow_threshold"] = trial.suggest_float("flow_threshold", *self.ranges["flow_threshold"])
        p["cellprob_threshold"] = trial.suggest_float("cellprob_threshold", *self.ranges["cellprob_threshold"])
        p["min_size"] = trial.suggest_int("min_size", *self.ranges["min_size"])
        p["niter"] = trial.suggest_categorical("niter", self.niters)
        p["bsize"] = (trial.suggest_categorical("bsize", self.bsizes) if self.bsizes
                      else int(self.defaults["bsize"]))
        return p

    def default_trial(self) -> Dict[str, float]:
        """Cellpose's defaults as trial parameters (for `study.enqueue_trial`)."""
        keys = ["diameter", "flow_threshold", "cellprob_threshold", "min_size", "niter"]
        if self.bsizes:
            keys.append("bsize")
        return {k: self.defaults[k] for k in keys}


class Objective:
    """`objective(trial) -> mean score over frames`. Per frame: flows from `source.get(image, diameter, bsize)`
    (the network only on a cache miss), masks by `masks_fn`, scores by `seg2d.metrics.frame_scores`.
    Mean scores of REPORT_KEYS are stored as trial user attrs. With `prune`, the running mean is reported per
    frame (stable frame order) and hopeless trials are stopped by the study's pruner."""

    def __init__(self, frames: Sequence[TuneFrame], source, space: SearchSpace, objective: str = "dice",
                 prune: bool = False, masks_fn: Optional[Callable] = None):
        self.frames, self.source, self.space = list(frames), source, space
        self.key = OBJECTIVES[objective]
        self.prune = prune
        self.masks_fn = masks_fn or masks_from_flows

    def predict(self, frame: TuneFrame, params: Dict[str, float]) -> np.ndarray:
        flows = self.source.get(frame.image, params["diameter"], params["bsize"])
        return self.masks_fn(flows, flow_threshold=params["flow_threshold"],
                             cellprob_threshold=params["cellprob_threshold"], min_size=params["min_size"],
                             niter=params["niter"])

    def evaluate(self, params: Dict[str, float], trial=None) -> List[Dict[str, float]]:
        """Per-frame scores for `params`; reports to `trial` and may raise optuna.TrialPruned when pruning."""
        per_frame = []
        for step, frame in enumerate(self.frames):
            per_frame.append(frame_scores(frame.gt, self.predict(frame, params)))
            if self.prune and trial is not None:
                trial.report(float(np.mean([s[self.key] for s in per_frame])), step=step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after {step + 1} of {len(self.frames)} frames")
        return per_frame

    def __call__(self, trial) -> float:
        params = self.space.suggest(trial)
        means = mean_scores(self.evaluate(params, trial))
        for k in REPORT_KEYS:
            trial.set_user_attr(k, means[k])
        return means[self.key]
