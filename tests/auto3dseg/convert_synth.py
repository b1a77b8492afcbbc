"""Builders of tiny CellMap-format stores for the converter tests (metadata written by hand here).

Raw EM is an analytic field of world position, so any converted voxel can be checked against
the field at its world centre (read back through the NIfTI affine).
"""

import json
import os

import numpy as np

from cellmap import _zarr

#: EM value at world (z, y, x) nm: linear, distinct per axis, within 20..235 on the stores below.
EM_COEF = (0.11, 0.07, 0.05)
EM_OFFSET = 30.0


def em_field(z_nm, y_nm, x_nm):
    return EM_OFFSET + EM_COEF[0] * z_nm + EM_COEF[1] * y_nm + EM_COEF[2] * x_nm


def ome_attrs(scales, translations):
    return {"multiscales": [{
        "version": "0.4", "name": "synth",
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": f"s{i}", "coordinateTransformations": [
            {"type": "scale", "scale": [float(v) for v in s]},
            {"type": "translation", "translation": [float(v) for v in t]}]}
            for i, (s, t) in enumerate(zip(scales, translations))]}]}


def _centres(t0, vs0, shape, level):
    vs = [v * 2 ** level for v in vs0]
    t = [a + (2 ** level - 1) / 2 * v for a, v in zip(t0, vs0)]
    return [ti + np.arange(n) * v for ti, v, n in zip(t, vs, shape)], vs, t


def write_raw(zarr_root, vs0, t0, shape0, chunks=(8, 16, 16), levels=3, constant=None, zero_x_below_nm=None):
    """``<zarr_root>/recon-1/em/fibsem-uint8`` with levels s0..s{levels-1}: uint8 em_field sampled
    at each level's voxel centres (or ``constant``); voxels with x centre < ``zero_x_below_nm`` are 0."""
    loc = os.path.join(zarr_root, "recon-1", "em", "fibsem-uint8")
    for p in (zarr_root, os.path.join(zarr_root, "recon-1"), os.path.join(zarr_root, "recon-1", "em")):
        _zarr.create_group(p)
    g = _zarr.create_group(loc, overwrite=True)
    scales, trans = [], []
    for n in range(levels):
        shape = tuple(max(1, s // 2 ** n) for s in shape0)
        (z, y, x), vs, t = _centres(t0, vs0, shape, n)
        if constant is None:
            data = em_field(z[:, None, None], y[None, :, None], x[None, None, :])
            data = np.clip(np.rint(data), 0, 255).astype(np.uint8)
        else:
            data = np.full(shape, constant, np.uint8)
        if zero_x_below_nm is not None:
            data[:, :, x < zero_x_below_nm] = 0
        _zarr.create_array(g, f"s{n}", data, chunks=chunks)
        scales.append(vs)
        trans.append(t)
    g.attrs.update(ome_attrs(scales, trans))
    return loc


def delete_raw_chunks(raw_loc, level, z_chunks):
    """Remove every chunk file of raw level ``level`` whose z chunk index is in ``z_chunks``."""
    base = os.path.join(raw_loc, level)
    n = 0
    for zc in z_chunks:
        d = os.path.join(base, str(zc))
        if os.path.isdir(d):
            for dirpath, _, files in os.walk(d):
                n += len(files)
            import shutil
            shutil.rmtree(d)
    return n


def write_crop(zarr_root, crop, vs, t, arrays, kinds=None, unknown_counts=None, chunks=(8, 16, 16)):
    """A ground-truth crop group with one multiscale class group per entry of ``arrays``
    (name -> (z, y, x) integer array on the grid (vs, t)); ``kinds``: name -> "semantic"/"instance";
    ``unknown_counts``: name -> complement_counts.unknown."""
    kinds = kinds or {}
    unknown_counts = unknown_counts or {}
    base = os.path.join(zarr_root, "recon-1", "labels")
    _zarr.create_group(base)
    _zarr.create_group(os.path.join(base, "groundtruth"))
    cg = _zarr.create_group(os.path.join(base, "groundtruth", crop), overwrite=True)
    cg.attrs.update({"cellmap": {"annotation": {"version": "0.1", "name": crop, "class_names": sorted(arrays)}}})
    for name, arr in arrays.items():
        kind = kinds.get(name, "semantic")
        enc = {"absent": 0, "present": 1, "unknown": 255} if kind == "semantic" else {"absent": 0, "unknown": 255}
        ann_type = {"type": f"{kind}_segmentation", "encoding": enc}
        loc = os.path.join(base, "groundtruth", crop, name)
        g = _zarr.create_group(loc, overwrite=True)
        g.attrs.update(ome_attrs([vs], [t]))
        g.attrs.update({**ome_attrs([vs], [t]),
                        "cellmap": {"annotation": {"class_name": name, "annotation_type": ann_type}}})
        a = _zarr.create_array(g, "s0", np.asarray(arr), chunks=chunks)
        unk = int(unknown_counts.get(name, 0))
        absent = int(np.count_nonzero(np.asarray(arr) == 0))
        a.attrs.update({"cellmap": {"annotation": {"class_name": name, "annotation_type": ann_type,
                                                   "complement_counts": {"absent": absent, "unknown": unk}}}})
    return os.path.join(base, "groundtruth", crop)


def write_datasplit(path, rows):
    """CellMap's 5-column, all-quoted, headerless datasplit.csv. ``rows``: (usage, zarr_root, crop, classes)."""
    lines = []
    for usage, zroot, crop, classes in rows:
        lines.append(f'"{usage}","{zroot}","recon-1/em/fibsem-uint8","{zroot}",'
                     f'"recon-1/labels/groundtruth/{crop}/[{",".join(classes)}]"')
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)


def world_centres(shape_xyz, affine):
    """World (x, y, z) of every voxel centre of a NIfTI array, via its affine: 3 arrays (x, y, z)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape_xyz], indexing="ij")
    pts = np.stack([i, j, k, np.ones_like(i)], axis=-1) @ np.asarray(affine).T
    return pts[..., 0], pts[..., 1], pts[..., 2]


def read_json(path):
    with open(path) as fh:
        return json.load(fh)
