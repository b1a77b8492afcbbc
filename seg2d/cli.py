"""Fire command line for seg2d: `tune`, `calibrate`, `segment`, `train` (thin wrappers over the library)."""

import json
from pathlib import Path
from typing import Optional

__all__ = ["tune", "calibrate", "segment", "train", "main", "optimize_main"]


def tune(dataset: str, model: str = "cyto3", n_trials: int = 100, out: str = "seg2d_out",
         config: Optional[str] = None, storage: Optional[str] = None, study_name: Optional[str] = None,
         seed: Optional[int] = None, objective: Optional[str] = None, calibrate: Optional[bool] = None,
         baseline_masks: Optional[str] = None, calibration_frames: Optional[int] = None,
         per_frame: Optional[bool] = None, max_shift: Optional[int] = None, cache_dir: Optional[str] = None,
         cache_memory: Optional[bool] = None, progress: bool = True):
    """Calibrate the ground truth, search Cellpose parameters with Optuna, write masks and a report.

    Shell:  python -m seg2d tune --dataset DIR --model cyto3|PATH --n_trials 100 --out OUT
            [--config configs/seg2d.yaml] [--storage OUT/study.db | study.log] [--objective dice|iou|f1|...]
            [--baseline_masks DIR] [--calibrate=False] [--per_frame] [--cache_dir DIR] [--cache_memory=False]
    Python: seg2d.tune.tune(dataset, model, n_trials, out, ...)

    DIR holds images/<name>.tif and masks/<name>.tif (same base names; masks binary or labelled).
    --n_trials is the total for the study: resuming with the same --storage runs only the missing ones.
    --cache_memory=False (without --cache_dir) reruns the network in every trial; a median pruner then stops
    hopeless trials after a few frames.
    Writes OUT/best_params.json, calibration.json, trials.csv, notes.md, *.png, masks/*.tif.
    """
    from seg2d.tune import tune as run

    summary = run(dataset, model, int(n_trials), out, config=config, storage=storage, study_name=study_name,
                  seed=seed, objective=objective, calibrate=calibrate, baseline_masks=baseline_masks,
                  calibration_frames=calibration_frames, per_frame=per_frame, max_shift=max_shift,
                  cache_dir=cache_dir, cache_memory=cache_memory, progress=progress)
    print(f"best {summary['objective']} {summary['best_value']:.4f} (Cellpose defaults "
          f"{summary['default_value']:.4f}); mean IoU {summary['mean_iou']:.4f}, F1@0.5 {summary['mean_f1_50']:.4f}")
    print(f"wrote {Path(out) / 'best_params.json'}, notes.md, trials.csv, masks/ in {out}")


def calibrate(dataset: str, model: Optional[str] = None, baseline_masks: Optional[str] = None,
              out: Optional[str] = None, calibration_frames: int = 5, per_frame: bool = False,
              max_shift: int = 40):
    """Find the flip/rotation and shift that align the ground truth with the images.

    Shell:  python -m seg2d calibrate --dataset DIR (--model cyto3|PATH | --baseline_masks DIR) [--out O]
            [--calibration_frames 5] [--per_frame] [--max_shift 40]
    Python: seg2d.align.calibrate_dataset(frames, baselines, ...)

    Transform names: identity rot90 rot180 rot270 flipud fliplr rot90_flipud rot90_fliplr, meaning
    np.rot90 k times, then the flip, then np.roll by shift [dy, dx], applied to the ground truth.
    Writes O/calibration.json when --out is given; prints the result.
    """
    from seg2d.align import calibrate_dataset, model_baselines, read_baselines
    from seg2d.cache import FlowCache
    from seg2d.errors import ConfigError
    from seg2d.io import load_dataset, write_json
    from seg2d.model import load_model

    if (model is None) == (baseline_masks is None):
        raise ConfigError("calibrate: pass exactly one of --model cyto3|PATH or --baseline_masks DIR")
    frames = load_dataset(dataset)
    if baseline_masks:
        baselines, source = read_baselines(frames, baseline_masks), f"baseline masks {baseline_masks}"
    else:
        adapter = load_model(model)
        baselines = model_baselines(frames, adapter, FlowCache(adapter))
        source = f"model {model} at Cellpose defaults"
    cal = calibrate_dataset(frames, baselines, int(max_shift), int(calibration_frames), bool(per_frame), source)
    if out:
        path = write_json(Path(out) / "calibration.json", cal.to_json())
        print(f"wrote {path}")
    print(json.dumps({"transform": cal.transform, "shift": cal.shift, "votes": cal.votes}))


def segment(images: str, params: str, out: str, model: Optional[str] = None, progress: bool = True):
    """Segment new frames with saved parameters.

    Shell:  python -m seg2d segment --images DIR_OR_TIF --params OUT/best_params.json --out MASKS
            [--model PATH]
    Python: seg2d.segment.segment_images(images, params, out, model)
    """
    from seg2d.segment import segment_images

    written = segment_images(images, params, out, model=model, progress=progress)
    print(f"wrote {len(written)} masks to {out}")


def train(dataset: str, out: str, model: Optional[str] = None, epochs: int = 100, bsize: int = 224,
          rescale: bool = False, learning_rate: float = 0.005, batch_size: int = 8,
          calibration: Optional[str] = None, model_name: str = "seg2d_cellpose", min_train_masks: int = 1,
          overwrite: bool = False):
    """Train a Cellpose 3.x model on the dataset (rescale off by default, as for thin protrusions).

    Shell:  python -m seg2d train --dataset DIR --out OUT [--model cyto3|PATH] [--epochs 100] [--bsize 224]
            [--rescale] [--learning_rate 0.005] [--calibration OUT/calibration.json] [--overwrite]
    Python: seg2d.train.train_model(dataset, out, ...)
    Prints the weights path (OUT/models/<model_name>), usable as --model PATH.
    """
    from seg2d.train import train_model

    path = train_model(dataset, out, model=model, epochs=int(epochs), bsize=int(bsize), rescale=bool(rescale),
                       learning_rate=float(learning_rate), batch_size=int(batch_size), calibration=calibration,
                       model_name=model_name, min_train_masks=int(min_train_masks), overwrite=bool(overwrite))
    print(f"wrote {path}")


COMMANDS = {"tune": tune, "calibrate": calibrate, "segment": segment, "train": train}


def _fire(component):
    import fire

    from seg2d.errors import Seg2DError

    try:
        fire.Fire(component)
    except Seg2DError as exc:
        import sys

        print(f"seg2d: error: {exc}", file=sys.stderr)
        sys.exit(2)  # as the other commands of the project: 2 = bad input or setting, message above


def main():
    """`seg2d` / `python -m seg2d`: the four commands."""
    _fire(COMMANDS)


def optimize_main():
    """`optimize_cellpose_segmentation`: runs `tune` directly."""
    _fire(tune)
