"""run_auto3dseg settings: configs/auto3dseg.yaml merged over built-in defaults."""

from __future__ import annotations

import copy
import os

import yaml

from auto3dseg.errors import Auto3DSegError

__all__ = ["DEFAULTS", "DEFAULT_CONFIG", "load_run_config"]

DEFAULT_CONFIG = "configs/auto3dseg.yaml"

DEFAULTS = {
    "modality": "mri",
    "input": {"sigmoid": True, "crop_foreground": False, "orientation_ras": False, "normalize_mode": "meanstd"},
    "train_params": {},
    "swinunetr": {"use_pretrain": "auto"},
    "ensemble": {"method": "AlgoEnsembleBestByFold", "n_best": 2, "mode": "mean"},
    "analyze": {"engine": "ours", "slab_voxels": 2**23},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_run_config(path=DEFAULT_CONFIG) -> dict:
    """The settings dict; a missing default file gives the defaults, a missing explicit file raises.

    Sections other than the built-in ones are kept (for customisation hooks, e.g. ``auto3dseg.customize``).
    """
    if path is None or (os.fspath(path) == DEFAULT_CONFIG and not os.path.isfile(path)):
        return copy.deepcopy(DEFAULTS)
    if not os.path.isfile(path):
        raise Auto3DSegError(f"--config {path}: file not found (default {DEFAULT_CONFIG})")
    with open(path) as fh:
        user = yaml.safe_load(fh) or {}
    if not isinstance(user, dict):
        raise Auto3DSegError(f"{path}: expected a mapping of settings, found {type(user).__name__}")
    cfg = _merge(DEFAULTS, user)
    if str(cfg["modality"]).lower() not in ("ct", "mri"):
        raise Auto3DSegError(
            f"{path}: modality {cfg['modality']!r}: MONAI's templates accept only ct or mri (see the comment in "
            f"{DEFAULT_CONFIG} for the EM choice)"
        )
    return cfg
