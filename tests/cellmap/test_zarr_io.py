"""Reading world boxes at any level against an analytic field; clip+pad; missing chunks."""

import os

import numpy as np
import pytest

from cellmap.grid import Box, Grid, GridMismatchError
from cellmap.io import (MissingChunkCheckError, missing_chunks, missing_fraction, missing_mask, read_box,
                        read_grid, read_window)
from cellmap.multiscale import read_multiscale

from cellmap_fixtures import field, write_analytic_pyramid


def expected(raw, level, start, stop):
    """Hand oracle: field at the centres of level voxels start..stop (corner-based), and
    the outside mask, from the fixture's own numbers (not from cellmap.grid)."""
    vs0, t0, shape0 = raw["vs0"], raw["t0"], raw["shape0"]
    corner0 = [t - v / 2 for t, v in zip(t0, vs0)]
    vs = [v * 2 ** level for v in vs0]
    shape = [s // 2 ** level for s in shape0]
    axes = [corner0[a] + (np.arange(start[a], stop[a]) + 0.5) * vs[a] for a in range(3)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    inside = [(np.arange(start[a], stop[a]) >= 0) & (np.arange(start[a], stop[a]) < shape[a]) for a in range(3)]
    ins = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
    return field(zz, yy, xx), ~ins, vs, corner0


WINDOWS = [((0, 0, 0), (20, 36, 44)), ((3, 5, 7), (11, 30, 19)), ((-2, -3, 40), (4, 9, 50)), ((18, 34, -1), (23, 38, 2))]


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("window", WINDOWS)
def test_read_box_at_any_level_matches_analytic_field(analytic_raw, level, window):
    ms = read_multiscale(analytic_raw["path"])
    start = tuple(w // 2 ** level for w in window[0])
    stop = tuple(-(-w // 2 ** level) for w in window[1])
    want, want_out, vs, corner0 = expected(analytic_raw, level, start, stop)
    box = Box([c + s * v for c, s, v in zip(corner0, start, vs)], [c + s * v for c, s, v in zip(corner0, stop, vs)])
    data, outside = read_box(ms, f"s{level}", box, fill_value=-1)
    assert data.shape == want.shape == outside.shape
    np.testing.assert_array_equal(outside, want_out)
    np.testing.assert_allclose(data[~outside], want[~outside], rtol=0, atol=1e-6)
    assert np.all(data[outside] == -1)


def test_half_voxel_box_is_refused_and_outward_snap_reads_covering_voxels(analytic_raw):
    ms = read_multiscale(analytic_raw["path"])
    lv = ms["s1"]                       # voxel (10.48, 8, 8)
    c = lv.grid.corner_nm
    # y starts and stops half a voxel off the s1 grid: indices (1, 0.5, 1) .. (5, 4.5, 5)
    box = Box([c[0] + 10.48, c[1] + 4, c[2] + 8], [c[0] + 5 * 10.48, c[1] + 36, c[2] + 40])
    with pytest.raises(GridMismatchError, match="box start"):
        read_box(ms, lv, box)
    data, outside = read_box(ms, lv, box, snap="outward", fill_value=0)
    want, want_out, _, _ = expected(analytic_raw, 1, (1, 0, 1), (5, 5, 5))
    assert data.shape == (4, 5, 4) and not outside.any() and not want_out.any()
    np.testing.assert_allclose(data, want, atol=1e-6)


def test_axis_order_and_whole_voxel_translation_shift(analytic_raw):
    ms = read_multiscale(analytic_raw["path"])
    g = ms["s0"].grid
    a, _ = read_grid(ms, "s0", g.sub_grid((2, 3, 4), (5, 7, 9)))
    b, _ = read_grid(ms, "s0", g.sub_grid((2, 3, 5), (5, 7, 10)))   # one voxel along x
    c, _ = read_grid(ms, "s0", g.sub_grid((3, 3, 4), (6, 7, 9)))   # one voxel along z
    np.testing.assert_allclose(b - a, 7.0 * 4.0)
    np.testing.assert_allclose(c - a, 3.0 * 5.24)
    with pytest.raises(GridMismatchError):
        read_grid(ms, "s0", Grid(g.voxel_size_nm, tuple(np.add(g.translation_nm, (0, 0, 2.0))), (2, 2, 2)))
    with pytest.raises(GridMismatchError, match="differs from the target grid"):
        read_grid(ms, "s1", g.sub_grid((0, 0, 0), (2, 2, 2)))


def test_read_window_on_plain_array_pads_outside(analytic_raw):
    from cellmap.io import open_level
    ms = read_multiscale(analytic_raw["path"])
    arr = open_level(ms, "s2")   # shape (5, 9, 11)
    data, outside = read_window(arr, (-1, 8, 10), (1, 10, 12), fill_value=-5)
    assert outside.tolist() == [[[True, True], [True, True]], [[False, True], [True, True]]]
    assert data[0, 0, 0] == -5 and data[1, 0, 0] == pytest.approx(np.asarray(arr)[0, 8, 10])


def test_missing_chunks_are_detected_and_read_as_fill(tmp_path):
    vs0, t0, shape0, chunks = (4.0, 4.0, 4.0), (40.0, 20.0, 44.0), (16, 24, 20), (8, 8, 8)
    path = write_analytic_pyramid(tmp_path / "m.zarr", vs0, t0, shape0, chunks, n_levels=2)
    # delete s0 chunks (1, 0, 0) and (1, 2, 2): nested "/" layout z/y/x
    for idx in [(1, 0, 0), (1, 0, 1), (1, 2, 2)]:
        os.remove(os.path.join(path, "s0", *map(str, idx)))
    ms = read_multiscale(path)
    g = ms["s0"].grid
    # window z 4..16, y 0..24, x 12..24 (x past the end at 20)
    box = g.sub_grid((4, 0, 12), (16, 24, 24)).box
    # (1, 0, 0) covers x 0..8: outside the window, so not reported
    assert set(missing_chunks(ms.array_location("s0"), (4, 0, 12), (16, 24, 24))) == {(1, 0, 1), (1, 2, 2)}
    mask = missing_mask(ms, "s0", box)
    # (1,0,1): z 8..16, y 0..8, x 8..16 -> window x 12..16; (1,2,2): z 8..16, y 16..24, x 16..20
    want = np.zeros((12, 24, 12), bool)
    want[4:12, 0:8, 0:4] = True
    want[4:12, 16:24, 4:8] = True
    np.testing.assert_array_equal(mask, want)
    inside_voxels = 12 * 24 * 8
    assert missing_fraction(ms, "s0", box) == pytest.approx(2 * 8 * 8 * 4 / inside_voxels)
    data, outside = read_box(ms, "s0", box)
    assert np.all(data[mask] == 0)                       # silent zeros: what a partial download gives
    assert np.all(data[~mask & ~outside] > 0)
    assert missing_fraction(ms, "s1", box) == 0.0
    assert missing_fraction(ms, "s0", g.sub_grid((100, 0, 0), (101, 1, 1)).box) is None


def test_missing_chunk_check_refuses_remote():
    with pytest.raises(MissingChunkCheckError, match="local store"):
        missing_chunks("s3://bucket/x.zarr/recon-1/em/fibsem-uint8/s0", (0, 0, 0), (1, 1, 1))
