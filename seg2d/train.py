"""The `train` step: a Cellpose 3.x model trained on the dataset's (calibrated) frames, saved as a weights file."""

from pathlib import Path
from typing import Optional

import numpy as np

from seg2d.align import aligned_frames
from seg2d.calibrate import IDENTITY, Calibration
from seg2d.errors import ConfigError, DataError
from seg2d.io import load_dataset
from seg2d.model import NORMALIZE, resolve_model

__all__ = ["train_model"]


def train_model(dataset: str, out: str, model: Optional[str] = None, epochs: int = 100, bsize: int = 224,
                rescale: bool = False, learning_rate: float = 0.005, weight_decay: float = 1e-5,
                batch_size: int = 8, calibration: Optional[str] = None, min_train_masks: int = 1,
                model_name: str = "seg2d_cellpose", seed: int = 0, diam_mean: float = 30.0,
                overwrite: bool = False) -> Path:
    """Train on DIR/images + DIR/masks (GT aligned by `calibration`, a calibration.json, if given) and return
    the weights path `out/models/<model_name>`. `model`: initial weights (a path or an on-disk built-in name;
    None = random initialisation). `rescale=False` keeps pixel sizes (as users do for thin protrusions);
    `bsize` is the training crop size in px. An existing weights file is kept unless `overwrite`."""
    import json

    import torch
    from cellpose import models, train

    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: train at least 1 epoch")
    out = Path(out)
    target = out / "models" / model_name
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: a trained model already exists; pass --overwrite or another --model_name")
    cal = IDENTITY
    if calibration:
        with open(calibration, encoding="utf-8") as fh:
            cal = Calibration.from_json(json.load(fh))
    frames = aligned_frames(load_dataset(dataset), cal)
    counts = [int(f.gt.max()) for f in frames]
    if max(counts) < min_train_masks:
        raise DataError(f"{dataset}: no frame has at least {min_train_masks} masks (Cellpose would drop them all); "
                        "lower --min_train_masks or add ground truth")
    torch.manual_seed(seed)
    np.random.seed(seed)  # train_seg draws crops and augmentations from numpy's global RNG
    if model:
        resolved = resolve_model(model)
        cp = (models.CellposeModel(gpu=False, mkldnn=False, model_type=resolved.builtin) if resolved.builtin
              else models.CellposeModel(gpu=False, mkldnn=False, pretrained_model=resolved.path))
    else:
        cp = models.CellposeModel(gpu=False, mkldnn=False, diam_mean=float(diam_mean))
    (out / "models").mkdir(parents=True, exist_ok=True)  # train_seg needs an existing save_path
    path, _, _ = train.train_seg(
        cp.net, train_data=[f.image for f in frames], train_labels=[f.gt for f in frames], channels=[0, 0],
        normalize=dict(NORMALIZE), n_epochs=int(epochs), learning_rate=float(learning_rate),
        weight_decay=float(weight_decay), batch_size=int(batch_size), bsize=int(bsize), rescale=bool(rescale),
        min_train_masks=int(min_train_masks), save_path=str(out), model_name=model_name,
        save_every=max(1, int(epochs)))
    return Path(path)
