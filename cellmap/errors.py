"""The root error of the cellmap package: every user-facing failure is a subclass."""

__all__ = ["CellMapError"]


class CellMapError(Exception):
    """A problem with CellMap data or its use, with a message that names the file and the fix."""
