"""Ground-truth calibration: the dihedral transform and shift that align GT masks with a baseline segmentation."""

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from skimage.registration import phase_cross_correlation

from seg2d.dihedral import apply_calibration, apply_transform, transforms_for_shapes
from seg2d.errors import CalibrationError
from seg2d.metrics import foreground_dice

__all__ = ["FrameAlignment", "Calibration", "align_frame", "calibrate_frames", "IDENTITY"]


@dataclass(frozen=True)
class FrameAlignment:
    """Best alignment of one frame: transform name, shift (dy, dx) in px, Dice vs baseline, all candidates."""

    name: str
    transform: str
    shift: List[int]
    dice: float
    candidates: Dict[str, Dict[str, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class Calibration:
    """The calibration applied to ground truth: `np.rot90`^k, flip, then `np.roll` by `shift` (dy, dx) px."""

    transform: str
    shift: List[int]
    per_frame: bool = False
    max_shift_px: int = 40
    votes: Dict[str, int] = field(default_factory=dict)
    frames: List[Dict[str, object]] = field(default_factory=list)
    source: str = "baseline"

    def for_frame(self, name: str):
        """(transform, shift) for frame `name`: its own entry when per_frame, else the global one."""
        if self.per_frame:
            for f in self.frames:
                if f["name"] == name:
                    return f["transform"], f["shift"]
        return self.transform, self.shift

    def apply(self, name: str, gt: np.ndarray) -> np.ndarray:
        """Ground truth of frame `name` aligned with its image."""
        transform, shift = self.for_frame(name)
        return apply_calibration(gt, transform, shift)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Calibration":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


IDENTITY = Calibration("identity", [0, 0], source="none")


def _clamp(shift, max_shift_px: int) -> List[int]:
    return [int(np.clip(int(round(float(s))), -max_shift_px, max_shift_px)) for s in shift]


def align_frame(name: str, gt: np.ndarray, baseline: np.ndarray, max_shift_px: int = 40) -> FrameAlignment:
    """Try every dihedral transform of `gt` (y, x labels) whose shape fits `baseline` (y, x labels), estimate the
    shift that moves it onto the baseline foreground by phase correlation (clamped to ±max_shift_px), score
    foreground Dice, and return the best."""
    names = transforms_for_shapes(gt.shape, baseline.shape)
    if not names:
        raise CalibrationError(
            f"frame {name}: ground truth shape {gt.shape} cannot be rotated or flipped onto image shape "
            f"{baseline.shape}; crop the mask to the image size."
        )
    ref = (baseline > 0).astype(np.float32)
    candidates = {}
    for tname in names:
        moving = (apply_transform(gt, tname) > 0).astype(np.float32)
        if ref.any() and moving.any():
            est, _, _ = phase_cross_correlation(ref, moving, upsample_factor=1, disambiguate=False,
                                                normalization=None)
            shift = _clamp(est, max_shift_px)
        else:
            shift = [0, 0]
        dice = foreground_dice(baseline, apply_calibration(gt, tname, shift))
        candidates[tname] = {"shift": shift, "dice": dice}
    # prefer higher Dice; among equals, the earlier (simpler) transform in TRANSFORMS order
    best = max(names, key=lambda n: (candidates[n]["dice"], -names.index(n)))
    return FrameAlignment(name, best, candidates[best]["shift"], candidates[best]["dice"], candidates)


def calibrate_frames(names: Sequence[str], gts: Sequence[np.ndarray], baselines: Sequence[np.ndarray],
                     max_shift_px: int = 40, calibration_frames: Optional[int] = 5, per_frame: bool = False,
                     min_dice: float = 0.05, source: str = "baseline") -> Calibration:
    """Align GT to baselines frame by frame and vote.

    Global mode: the first `calibration_frames` frames vote for a transform (ties broken by mean Dice);
    the shift is the median (rounded) of the winners' shifts. `per_frame`: every frame keeps its own alignment.
    Raises CalibrationError when every baseline is empty or no alignment reaches `min_dice`.
    """
    if len(names) != len(gts) or len(names) != len(baselines):
        raise CalibrationError("calibration needs one baseline per ground-truth frame")
    use = len(names) if per_frame or not calibration_frames else min(int(calibration_frames), len(names))
    idx = [i for i in range(len(names)) if np.any(baselines[i] > 0)]
    if not idx:
        raise CalibrationError(
            f"calibration: the baseline segmentation is empty on all {len(names)} frames, so there is "
            "nothing to align the ground truth to; pass --baseline_masks DIR (masks from another tool), "
            "a model that segments these images, or --calibrate=False to trust the ground truth as is."
        )
    chosen = idx if per_frame else idx[:use]
    aligned = [align_frame(names[i], gts[i], baselines[i], max_shift_px) for i in chosen]
    frames = [{"name": a.name, "transform": a.transform, "shift": a.shift, "dice": round(a.dice, 6)}
              for a in aligned]
    if max(a.dice for a in aligned) < min_dice:
        raise CalibrationError(
            f"calibration: no flip/rotation/shift brings the ground truth within Dice {min_dice} of the "
            f"baseline (best {max(a.dice for a in aligned):.3f} on frames {[a.name for a in aligned]}); "
            "check that masks belong to these images, or pass --calibrate=False."
        )
    votes = Counter(a.transform for a in aligned)
    mean_dice = {t: float(np.mean([a.dice for a in aligned if a.transform == t])) for t in votes}
    winner = max(votes, key=lambda t: (votes[t], mean_dice[t]))
    shifts = np.array([a.shift for a in aligned if a.transform == winner], dtype=float)
    shift = [int(v) for v in np.round(np.median(shifts, axis=0))]
    if per_frame:
        # frames without a usable baseline fall back to the voted alignment
        done = {a.name for a in aligned}
        frames += [{"name": n, "transform": winner, "shift": shift, "dice": None} for n in names if n not in done]
    return Calibration(winner, shift, per_frame=per_frame, max_shift_px=max_shift_px, votes=dict(votes),
                       frames=frames, source=source)
