"""Run settings and the Optuna search space, read from YAML (configs/seg2d.yaml) over built-in defaults."""

import copy
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from seg2d.errors import ConfigError
from seg2d.metrics import OBJECTIVES

__all__ = ["DEFAULT_CONFIG", "load_config"]

DEFAULT_CONFIG: Dict[str, Any] = {
    "objective": "dice",
    "search_space": {
        "diameter": [10, 15, 20, 25, 30, 40, 50, 60],
        "flow_threshold": [0.0, 1.5],
        "cellprob_threshold": [-6.0, 6.0],
        "min_size": [-1, 200],
        "niter": [0, 200, 500, 1000, 2000],
        "bsize": None,
    },
    "calibration": {"enabled": True, "max_shift_px": 40, "calibration_frames": 5, "per_frame": False},
    "study": {"name": "seg2d", "seed": 0, "n_startup_trials": 10, "pruner": "auto"},
    "cache": {"memory": True, "disk_dir": None},
    "tiling": {"tile_px": 2048, "overlap_px": 128},
    "report": {"overlay_frames": 3},
}


def _merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if key not in base:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(base)}")
        if isinstance(base[key], dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def _range(space: dict, key: str, where: str):
    value = space[key]
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and value[0] <= value[1]):
        raise ConfigError(f"{where}: search_space.{key} must be [low, high] with low <= high, got {value!r}")


def validate(cfg: dict, where: str = "config") -> dict:
    """Check objective, ranges and grids; raise ConfigError naming the setting and the fix."""
    if cfg["objective"] not in OBJECTIVES:
        raise ConfigError(f"{where}: objective {cfg['objective']!r} unknown; use one of {', '.join(OBJECTIVES)}")
    space = cfg["search_space"]
    for key in ("flow_threshold", "cellprob_threshold", "min_size"):
        _range(space, key, where)
    for key in ("diameter", "niter"):
        grid = space[key]
        if not isinstance(grid, (list, tuple)) or not grid:
            raise ConfigError(f"{where}: search_space.{key} must be a non-empty list (a grid), got {grid!r}")
    if any(float(d) <= 0 for d in space["diameter"]):
        raise ConfigError(f"{where}: search_space.diameter values are cell diameters in px and must be > 0")
    if any(int(n) < 0 or int(n) > 5000 for n in space["niter"]):
        raise ConfigError(f"{where}: search_space.niter values must be 0 (Cellpose default) to 5000")
    if space["bsize"] is not None and (not isinstance(space["bsize"], (list, tuple))
                                       or any(int(b) % 16 or int(b) < 32 for b in space["bsize"])):
        raise ConfigError(f"{where}: search_space.bsize must be null or a list of multiples of 16 (>= 32)")
    if cfg["study"]["pruner"] not in ("auto", "median", "none"):
        raise ConfigError(f"{where}: study.pruner must be auto, median or none")
    return cfg


def load_config(path: Optional[str] = None, **overrides) -> dict:
    """DEFAULT_CONFIG, updated from the YAML file at `path` (if any), then from dotted `overrides`
    such as `{"calibration.max_shift_px": 20}` (None values are ignored)."""
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    where = "built-in defaults"
    if path:
        where = str(path)
        if not Path(path).is_file():
            raise ConfigError(f"{path}: config file not found; pass --config configs/seg2d.yaml or omit it")
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a YAML mapping at the top level")
        cfg = _merge(cfg, data, where)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = cfg
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return validate(cfg, where)
