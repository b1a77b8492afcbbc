"""Helpers for tests/cellmap: hand-written OME metadata and analytic zarr pyramids.

Metadata dicts are written by hand here (not by the code under test).
"""

import json
import os

import numpy as np

from cellmap import _zarr

# f(world) for the analytic raw volume: distinct coefficients per axis catch axis-order
# mistakes; a linear field makes 2x block means equal f at the block centre exactly.
COEF = (3.0, 5.0, 7.0)  # per nm of z, y, x


def field(z_nm, y_nm, x_nm):
    """The analytic value at world position (z, y, x) in nm."""
    return COEF[0] * z_nm + COEF[1] * y_nm + COEF[2] * x_nm


def ome_attrs(scales, translations, name="test"):
    """OME-NGFF 0.4 multiscales attrs written out by hand."""
    return {"multiscales": [{
        "version": "0.4",
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": f"s{i}", "coordinateTransformations": [
            {"type": "scale", "scale": list(s)}, {"type": "translation", "translation": list(t)}]}
            for i, (s, t) in enumerate(zip(scales, translations))],
    }]}


def block_mean2(a):
    """2x block mean on every axis (trailing odd voxels dropped)."""
    z, y, x = (s // 2 * 2 for s in a.shape)
    a = a[:z, :y, :x]
    return a.reshape(z // 2, 2, y // 2, 2, x // 2, 2).mean(axis=(1, 3, 5))


def write_analytic_pyramid(path, vs0, t0, shape0, chunks, n_levels=3):
    """A float64 multiscale group whose s0 voxel (i, j, k) holds field() at its centre
    t0 + (i, j, k) * vs0; level N is the 2x block mean of level N-1, with hand-written
    metadata scale_N = vs0 * 2**N, translation_N = t0 + (2**N - 1) / 2 * vs0."""
    g = _zarr.create_group(path, overwrite=True)
    zz, yy, xx = np.meshgrid(*[t + np.arange(n) * v for t, v, n in zip(t0, vs0, shape0)], indexing="ij")
    data = field(zz, yy, xx)
    scales, trans = [], []
    for n in range(n_levels):
        _zarr.create_array(g, f"s{n}", data, chunks=chunks, fill_value=0)
        scales.append([v * 2 ** n for v in vs0])
        trans.append([t + (2 ** n - 1) / 2 * v for t, v in zip(t0, vs0)])
        data = block_mean2(data)
    g.attrs.update(ome_attrs(scales, trans))
    return str(path)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
