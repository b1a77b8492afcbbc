"""The root error of the seg2d package (standalone; imports nothing from cellmap)."""

__all__ = ["Seg2DError"]


class Seg2DError(Exception):
    """A problem with 2D data, models or tuning, with a message that names the file and the fix."""
