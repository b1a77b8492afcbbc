"""The root error of the seg2d package (standalone; imports nothing from cellmap)."""

__all__ = [
    "Seg2DError",
    "DataError",
    "ModelUnavailableError",
    "CalibrationError",
    "ConfigError",
]


class Seg2DError(Exception):
    """A problem with 2D data, models or tuning, with a message that names the file and the fix."""


class DataError(Seg2DError):
    """An image or mask file is missing, unpaired, empty, or not a 2D single-channel frame."""


class ModelUnavailableError(Seg2DError):
    """A Cellpose model cannot be loaded offline (weights not on disk, or a path that does not exist)."""


class CalibrationError(Seg2DError):
    """The ground truth cannot be aligned to the images (no usable baseline, impossible shapes)."""


class ConfigError(Seg2DError):
    """A search-space or run setting is invalid (unknown objective, empty grid, bad range)."""
