"""CellMap crops through MONAI Auto3DSeg: conversion, analysis, bundles, partial-annotation training,
prediction export, scoring and SLURM. Depends on ``cellmap`` (one way), MONAI, torch, nibabel, fire.

Entry points (Fire): ``convert_zarr_to_nifti.py`` and ``run_auto3dseg.py``. Submodules:

- conversion: ``conversion`` (library behind the CLI), ``convert_plan``, ``convert``, ``crop_sources``,
  ``zarr_window``, ``nifti``, ``labels``, ``datalist``, ``datacheck``, ``conversion_report``.
- Auto3DSeg runs: ``runconfig``, ``rundata``, ``analyze``, ``casestats``, ``datastats_report``, ``bundles``.
- partial annotations: ``partial_transforms``, ``partial_loss``, ``partial_metric``, ``customize``.
- predictions: ``export`` (NIfTI -> CellMap submission zarr); scoring lives in ``cellmap.evaluate``.
- clusters: ``slurm``, ``submit``, ``resources``.
"""

__all__ = [
    "errors", "conversion", "convert_plan", "convert", "crop_sources", "zarr_window", "nifti", "labels",
    "datalist", "datacheck", "conversion_report", "runconfig", "rundata", "analyze", "casestats",
    "datastats_report", "bundles", "partial_transforms", "partial_loss", "partial_metric", "customize",
    "export", "slurm", "submit", "resources",
]
