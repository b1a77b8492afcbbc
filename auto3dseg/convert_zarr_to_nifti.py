"""Fire CLI: CellMap zarr crops -> NIfTI pairs + datalist.json + data-check report (``convert_zarr_to_nifti``)."""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a file: python auto3dseg/convert_zarr_to_nifti.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

__all__ = ["convert", "main", "normalise_list", "normalise_spacing"]


def normalise_list(value, what: str):
    """Fire hands ``--crops=7,9`` as a tuple of ints, ``--crops=7`` as an int, ``--crops=crop7``
    or ``--crops='[7,9]'`` as a string: return a list of strings (or None)."""
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(int(value))]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    s = str(value).strip().strip("[]()")
    items = [p.strip().strip("'\"") for p in s.replace(" ", ",").split(",")]
    items = [p for p in items if p]
    if not items:
        from auto3dseg.errors import Auto3DSegError

        raise Auto3DSegError(f"--{what} {value!r}: give a comma-separated list")
    return items


def normalise_spacing(value):
    """``--target_spacing 8`` / ``8,8,8`` / ``'8 8 8'`` / ``[5.24,4,4]`` -> (z, y, x) floats."""
    from auto3dseg.errors import Auto3DSegError

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    items = normalise_list(value, "target_spacing")
    try:
        vals = tuple(float(v) for v in items)
    except ValueError:
        raise Auto3DSegError(f"--target_spacing {value!r}: give numbers Z Y X in nm, e.g. --target_spacing 8,8,8") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise Auto3DSegError(f"--target_spacing {value!r}: give one number or three (Z Y X in nm)")
    return vals


def convert(datasplit: str = "datasplit.csv", output_dir: str = "data/nifti", target_spacing=(8.0, 8.0, 8.0),
            scale: str = "auto", classes=None, datasets=None, crops=None, max_crops: int = 0, workers: int = 1,
            folds: int = None, fold_by: str = "dataset", seed: int = 0, force: bool = False,
            dry_run: bool = False, keep_flagged: bool = False, cluster: str = "local",
            slurm_profile: str = "local", slab_voxels: int = 1024 * 1024, threads: int = 1, quiet: bool = False):
    """Convert CellMap crops to NIfTI (uint8 EM + integer labels on one grid), datalist.json and a data-check report.

    Shell:   convert_zarr_to_nifti --datasplit datasplit.csv --output_dir data/nifti --target_spacing 8,8,8
    Python:  from auto3dseg.conversion import convert_datasplit; convert_datasplit("datasplit.csv", "data/nifti")

    Args:
      datasplit: CellMap datasplit.csv (5 quoted columns; relative paths resolve against its folder).
      output_dir: where images/, labels/, pictures/, datalist.json, conversion_report.{json,md} go.
      target_spacing: output voxel size Z Y X in nm (default 8,8,8; one number = isotropic).
      scale: raw level to read: "auto" (by physical voxel size: the coarsest level at least as
        fine as the target) or a level name such as s0, s1.
      classes: class set: a name in configs/classes/ (organelles14, challenge48), a YAML path or a
        list (mito,er). Default: the classes named in the datasplit, in CellMap id order.
      datasets: only these datasets (comma list, e.g. jrc_synth-a).
      crops: only these crops (comma list: 7,9 or crop7,crop9).
      max_crops: convert at most this many crops (0 = all).
      workers: processes; crops are cut into z slabs so one huge crop spreads over all workers.
      folds: number of folds (default min(5, number of groups), at least 2).
      fold_by: "dataset" (crops of one dataset share a fold) or "crop".
      seed: seed of the fold assignment.
      force: reconvert crops even when their outputs match the same parameters and sources.
      dry_run: plan and data check only: nothing written but the report (and its pictures).
      keep_flagged: keep crops the data check flags (they are excluded by default).
      cluster: "local" (processes on this machine) or "slurm" (dask-jobqueue workers, one SLURM
        job per worker, settings from --slurm_profile; needs the slurm extra).
      slurm_profile: cluster profile name or YAML (configs/slurm/) for --cluster slurm.
      slab_voxels: voxels handled per slab task (bounds memory per worker; default 1 Mi).
      threads: threads per process converting slabs of one crop concurrently (default 1; 2 helps
        only on idle cores and costs ~50 MB of malloc arenas).
      quiet: no progress bar.
    """
    from auto3dseg.conversion import ConversionError, convert_datasplit

    if cluster not in ("local", "slurm"):
        raise ConversionError(f"--cluster {cluster!r}: choose local or slurm")
    executor = None
    if cluster == "slurm":
        from auto3dseg.slurm import dask_cluster

        executor = dask_cluster(slurm_profile, jobs=max(1, int(workers)))
    try:
        report = convert_datasplit(
            datasplit=datasplit, output_dir=output_dir, target_spacing=normalise_spacing(target_spacing),
            scale=str(scale), classes=normalise_list(classes, "classes") if not _is_single_name(classes) else classes,
            datasets=normalise_list(datasets, "datasets"), crops=normalise_list(crops, "crops"),
            max_crops=int(max_crops or 0), workers=int(workers), folds=int(folds) if folds else None,
            fold_by=str(fold_by), seed=int(seed), force=bool(force), dry_run=bool(dry_run),
            keep_flagged=bool(keep_flagged), executor=executor, slab_voxels=int(slab_voxels), threads=int(threads),
            progress=not quiet)
    finally:
        if executor is not None:
            executor.close()
            executor.cluster.close()
    s = report["summary"]
    print(f"{s['crops']} crops: {s['kept']} kept, {s['excluded']} excluded, {s['skipped_unchanged']} unchanged (skipped)")
    for rec in report["crops"]:
        if rec["verdict"] != "kept":
            print(f"  excluded {rec['key']}: " + "; ".join(f["message"] for f in rec.get("flags", [])))
    if report.get("datalist"):
        print(f"datalist: {report['datalist']}")
    print(f"report:   {report['report_paths']['md']}")
    failed = [rec["key"] for rec in report["crops"] if rec["verdict"] == "excluded: conversion_error"]
    if failed:
        from auto3dseg.conversion import ConversionError

        raise ConversionError(f"{len(failed)} crop(s) failed to convert ({', '.join(failed)}); the other crops "
                              f"are written; the reasons are in {report['report_paths']['md']}")


def _is_single_name(value) -> bool:
    """A class-set name or YAML path stays a string; lists and comma strings become lists."""
    return isinstance(value, str) and "," not in value and not value.strip().startswith("[")


def main():
    """Console-script entry point (``convert_zarr_to_nifti``): user errors print one line and exit 2."""
    import fire

    from cellmap.errors import CellMapError

    try:
        fire.Fire(convert)
    except CellMapError as exc:
        print(f"convert_zarr_to_nifti: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
