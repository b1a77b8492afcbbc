"""The root error of the auto3dseg package."""

from cellmap.errors import CellMapError

__all__ = ["Auto3DSegError"]


class Auto3DSegError(CellMapError):
    """A problem in conversion, Auto3DSeg runs, prediction or SLURM submission."""
