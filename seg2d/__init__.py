"""seg2d: Cellpose + Optuna tuning of 2D segmentation with ground-truth calibration (standalone package)."""

from seg2d.errors import CalibrationError, ConfigError, DataError, ModelUnavailableError, Seg2DError

__all__ = [
    "Seg2DError", "DataError", "ModelUnavailableError", "CalibrationError", "ConfigError",
    # modules: io, metrics, dihedral, calibrate, align, model, cache, tiling, config, objective, study,
    # report, tune, segment, train, cli
]
