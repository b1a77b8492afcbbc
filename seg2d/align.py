"""Dataset-level GT calibration: baselines from a model or a folder of masks, then `calibrate_frames`."""

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from seg2d.calibrate import IDENTITY, Calibration, calibrate_frames
from seg2d.errors import DataError
from seg2d.io import Frame, read_mask
from seg2d.objective import TuneFrame

__all__ = ["read_baselines", "model_baselines", "calibrate_dataset", "aligned_frames"]


def read_baselines(frames: Sequence[Frame], baseline_dir) -> List[np.ndarray]:
    """Precomputed baseline masks `baseline_dir/<frame>.tif` (from another tool), one per frame."""
    folder = Path(baseline_dir)
    out = []
    for f in frames:
        candidates = [folder / f"{f.name}{s}" for s in (".tif", ".tiff")]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise DataError(f"{candidates[0]}: baseline mask for frame {f.name} not found in {folder}; "
                            "name baseline masks like the images.")
        mask = read_mask(path, require_objects=False)
        if mask.shape != f.image.shape:
            raise DataError(f"{path}: baseline shape {mask.shape} differs from image {f.image_path} "
                            f"shape {f.image.shape}; baselines must be predictions on these images.")
        out.append(mask)
    return out


def model_baselines(frames: Sequence[Frame], adapter, cache, params: Optional[dict] = None) -> List[np.ndarray]:
    """Baseline masks predicted with `params` (default: Cellpose's defaults), using the flow cache."""
    p = {**adapter.defaults(), **(params or {})}
    return [adapter.masks(cache.get(f.image, p["diameter"], p["bsize"]), p["flow_threshold"],
                          p["cellprob_threshold"], p["min_size"], p["niter"]) for f in frames]


def calibrate_dataset(frames: Sequence[Frame], baselines: Sequence[np.ndarray], max_shift_px: int = 40,
                      calibration_frames: int = 5, per_frame: bool = False, source: str = "baseline") -> Calibration:
    """The calibration of the frames' GT against `baselines` (see `seg2d.calibrate.calibrate_frames`)."""
    return calibrate_frames([f.name for f in frames], [f.mask for f in frames], list(baselines),
                            max_shift_px=max_shift_px, calibration_frames=calibration_frames,
                            per_frame=per_frame, source=source)


def aligned_frames(frames: Sequence[Frame], calibration: Calibration = IDENTITY) -> List[TuneFrame]:
    """Frames with their GT calibrated; DataError naming the mask file when shapes still differ."""
    out = []
    for f in frames:
        gt = calibration.apply(f.name, f.mask)
        if gt.shape != f.image.shape:
            raise DataError(
                f"{f.mask_path}: mask shape {f.mask.shape} after calibration `{calibration.for_frame(f.name)[0]}` is "
                f"{gt.shape}, image {f.image_path} is {f.image.shape}; run calibration (it tries the 90-degree "
                "rotations) or rotate the mask to the image."
            )
        out.append(TuneFrame(f.name, f.image, gt))
    return out
