"""CellMap data model in world nanometres (z, y, x): metadata, grids, reading, classes, splits, sample data.

No torch and no MONAI here; works with zarr-python 2.18 and 3.x. Submodules:

- ``cellmap.grid``: ``Grid``/``Box`` world-coordinate algebra (translation = centre of voxel 0).
- ``cellmap.multiscale``: OME-NGFF 0.4 metadata -> ``Multiscale``/``ScaleLevel``; ``choose_level``.
- ``cellmap.io``: read world boxes chunk by chunk with clip + pad; missing-chunk detection.
- ``cellmap.classes``: the class catalogue and named class sets (``configs/classes/*.yaml``).
- ``cellmap.annotation``: per crop x class status (annotated / absent / unknown).
- ``cellmap.datasplit``: CellMap's ``datasplit.csv``.
- ``cellmap.crop``: ``open_crop(row)``: raw pyramid, label grid, class arrays and status of one crop.
- ``cellmap.sample``: the embedded sample dataset (``python -m cellmap.sample DIR``).
- ``cellmap.resample``, ``cellmap.evaluate``, ``cellmap.submission``, ``cellmap.atomic``: resampling, CellMap scoring,
  submission zarrs, atomic file output.
"""

__all__ = ["errors", "grid", "multiscale", "io", "classes", "annotation", "datasplit", "crop", "sample",
           "resample", "evaluate", "submission", "atomic"]
