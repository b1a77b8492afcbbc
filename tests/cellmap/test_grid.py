"""Grid algebra against hand-computed numbers (incl. the real jrc_hela-2 crop1 example)."""

import numpy as np
import pytest

from cellmap.errors import CellMapError
from cellmap.grid import Box, Grid, GridMismatchError, snap_index


def test_corner_extent_end_box_by_hand():
    g = Grid((5.24, 4, 4), (0, 10, 20), (10, 20, 30))
    assert g.corner_nm == pytest.approx((-2.62, 8, 18))
    assert g.extent_nm == pytest.approx((52.4, 80, 120))
    assert g.end_nm == pytest.approx((49.78, 88, 138))
    assert g.box.start_nm == pytest.approx((-2.62, 8, 18))
    assert g.box.stop_nm == pytest.approx((49.78, 88, 138))
    assert g.size == 6000


def test_world_of_and_index_of_are_centre_based():
    g = Grid((2, 3, 4), (10, 20, 30), (5, 5, 5))
    # voxel (1, 2, 3) centre = translation + index * voxel
    assert g.world_of((1, 2, 3)) == pytest.approx((12, 26, 42))
    assert g.index_of((12, 26, 42)) == pytest.approx((1, 2, 3))
    # the low corner of voxel 0 is index -0.5
    assert g.index_of(g.corner_nm) == pytest.approx((-0.5, -0.5, -0.5))
    pts = np.array([[10, 20, 30], [14, 29, 46]])
    np.testing.assert_allclose(g.index_of(pts), [[0, 0, 0], [2, 3, 4]])


def test_hela2_crop1_label_s1_lands_on_integer_raw_s0_index():
    # Real metadata (reference section 2): label s0 (2.62, 2, 2) at (3132.21, 899, 25863);
    # label s1 = (5.24, 4, 4) at t0 + vs0/2; raw s0 (5.24, 4, 4) at 0.
    label_s1 = Grid((5.24, 4, 4), (3132.21 + 1.31, 899 + 1, 25863 + 1), (100, 500, 500))
    raw_s0 = Grid((5.24, 4, 4), (0, 0, 0), (6368, 1600, 12000))
    assert label_s1.offset_in(raw_s0) == (598, 225, 6466)
    label_s0 = Grid((2.62, 2, 2), (3132.21, 899, 25863), (200, 1000, 1000))
    # corners are compared, so the finer grid lands on the same raw index
    assert label_s0.offset_in(raw_s0) == (598, 225, 6466)
    # and the raw corner lies at a whole (negative) index of the label grid
    assert raw_s0.offset_in(label_s0) == (-1196, -450, -12932)


def test_translation_as_corner_is_a_half_voxel_misfit():
    raw_s0 = Grid((5.24, 4, 4), (0, 0, 0), (100, 100, 100))
    # the wrong (corner) convention shifts the label by half a label voxel: 597.75 in z
    wrong = Grid.from_corner((2.62, 2, 2), (3132.21, 899, 25863), (200, 1000, 1000))
    with pytest.raises(GridMismatchError, match="not a whole number"):
        wrong.offset_in(raw_s0)


@pytest.mark.parametrize("shift", [0.5, 0.25, -0.5])
def test_fractional_offset_raises_on_every_axis(shift):
    a = Grid((4, 4, 4), (0, 0, 0), (8, 8, 8))
    for axis in range(3):
        t = [0.0, 0.0, 0.0]
        t[axis] = shift * 4
        with pytest.raises(GridMismatchError, match="axis " + "zyx"[axis]):
            Grid((4, 4, 4), t, (2, 2, 2)).offset_in(a)


def test_offset_within_float_noise_is_accepted():
    # manifest-style numbers: 8429.85 / 2.62 = 3217.5 (fraction 0.5, a label 2x finer than raw);
    # the corner 8428.54 sits on raw corner 3217 * 2.62 up to float noise.
    raw = Grid((2.62, 2, 2), (1.31, 1, 1), (8, 8, 8))  # corner 0
    label = Grid((2.62, 2, 2), (8429.85 + 1e-9, 5, 7), (2, 2, 2))
    assert label.offset_in(raw) == (3217, 2, 3)


def test_window_of_box_snapping():
    g = Grid((4, 4, 4), (2, 2, 2), (10, 10, 10))  # corner 0
    assert g.window_of_box(Box((4, 8, 0), (12, 16, 40))) == ((1, 2, 0), (3, 4, 10))
    off = Box((5, 8, 0), (11, 16, 40))
    with pytest.raises(GridMismatchError):
        g.window_of_box(off)
    assert g.window_of_box(off, snap="outward") == ((1, 2, 0), (3, 4, 10))
    assert g.window_of_box(off, snap="inward") == ((2, 2, 0), (2, 4, 10))
    # outside the grid is allowed (not clipped)
    assert g.window_of_box(Box((-8, 0, 36), (4, 4, 48))) == ((-2, 0, 9), (1, 1, 12))


def test_sub_grid_and_resampled():
    g = Grid((2.62, 2, 2), (3132.21, 899, 25863), (200, 1000, 1000))
    r = g.resampled((5.24, 4, 4))
    assert r.shape == (100, 500, 500)
    assert r.translation_nm == pytest.approx((3133.52, 900, 25864))
    assert r.corner_nm == pytest.approx(g.corner_nm)
    with pytest.raises(GridMismatchError, match="resampled shape"):
        g.resampled((8, 8, 8))
    assert g.resampled((8, 8, 8), rounding="floor").shape == (65, 250, 250)  # 524 nm / 8 = 65.5
    assert g.resampled((8, 8, 8), rounding="ceil").shape == (66, 250, 250)
    s = g.sub_grid((10, -5, 3), (20, 5, 4))
    assert s.shape == (10, 10, 1)
    assert s.translation_nm == pytest.approx((3132.21 + 26.2, 899 - 10, 25863 + 6))


def test_box_intersection():
    a = Box((0, 0, 0), (10, 10, 10))
    b = Box((5, -5, 8), (20, 5, 9))
    i = a.intersect(b)
    assert i.start_nm == (5, 0, 8) and i.stop_nm == (10, 5, 9)
    assert not i.is_empty and i.volume_nm3 == pytest.approx(25)
    assert a.intersect(Box((11, 0, 0), (12, 1, 1))).is_empty
    assert a.contains(Box((1, 1, 1), (10, 10, 10)))
    assert not a.contains(b)
    assert Grid((2, 2, 2), (1, 1, 1), (5, 5, 5)).intersection(Grid((2, 2, 2), (9, 9, 9), (5, 5, 5))).size_nm == (2, 2, 2)


def test_bad_grids_raise_clear_errors():
    with pytest.raises(CellMapError, match="voxel sizes must be > 0"):
        Grid((0, 1, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(CellMapError, match="one length"):
        Grid((1, 1), (0, 0, 0), (1, 1, 1))
    with pytest.raises(GridMismatchError, match="2.5 voxels"):
        snap_index(2.5)
