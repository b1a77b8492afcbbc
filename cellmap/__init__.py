"""CellMap data model in world nanometres (z, y, x): metadata, grids, reading, classes, splits, sample data.

No torch and no MONAI here; works with zarr-python 2.18 and 3.x. Submodules:

- ``cellmap.grid``: ``Grid``/``Box`` world-coordinate algebra (translation = centre of voxel 0).
- ``cellmap.multiscale``: OME-NGFF 0.4 metadata -> ``Multiscale``/``ScaleLevel``; ``choose_level``.
- ``cellmap.io``: read world boxes chunk by chunk with clip + pad; missing-chunk detection.
"""

__all__ = ["errors", "grid", "multiscale", "io"]
