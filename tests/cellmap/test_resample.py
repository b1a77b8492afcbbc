"""cellmap.resample against analytic fields and hand-written label patterns (numpy only)."""

from dataclasses import dataclass

import numpy as np
import pytest

from cellmap.resample import (
    IGNORE_RANK, ResampleError, em_axis_taps, em_taps, label_axis_taps, label_taps, max_pool_taps,
    outside_axis, outside_mask, output_shape, resample_em, shift_taps, subset_taps, window_of,
)


@dataclass(frozen=True)
class G:
    """Minimal grid: (z, y, x) voxel size and voxel-0 centre in nm, shape."""

    voxel_size_nm: tuple
    translation_nm: tuple
    shape: tuple


def centres(g, axis):
    return g.translation_nm[axis] + np.arange(g.shape[axis]) * g.voxel_size_nm[axis]


COEF = (0.7, -0.3, 0.45)


def field(g):
    """f = 0.7 z - 0.3 y + 0.45 x + 100 (world nm) sampled at the voxel centres of g."""
    z, y, x = (centres(g, a) for a in range(3))
    return (COEF[0] * z[:, None, None] + COEF[1] * y[None, :, None] + COEF[2] * x[None, None, :] + 100.0)


SRC = G((5.24, 4.0, 4.0), (2.62 + 10 * 5.24, 2.0 + 40.0, 2.0 - 12.0), (40, 36, 30))


@pytest.mark.parametrize("out", [
    G((8.0, 8.0, 8.0), (60.0, 55.0, 10.0), (20, 14, 12)),      # area, misaligned
    G((2.0, 2.0, 2.0), (70.0, 60.0, 0.0), (60, 40, 40)),        # linear upsampling
    G((5.24, 4.0, 4.0), SRC.translation_nm, SRC.shape),         # identity
    G((5.24, 4.0, 4.0), (SRC.translation_nm[0] + 2.62, 44.0, -9.0), (30, 30, 25)),  # half/quarter-voxel shift
    G((16.0, 12.0, 6.0), (80.0, 60.0, 20.0), (8, 8, 12)),       # mixed ratios per axis
])
def test_em_exact_on_linear_field_at_interior_voxels(out):
    src = field(SRC).astype(np.float32)
    taps = em_taps(SRC, out)
    got = resample_em(src, taps, out_dtype=np.float32)
    want = field(out)
    assert got.shape == out.shape
    # interior: every tap of the voxel (before clamping) lay inside the source
    lo = [SRC.translation_nm[a] - SRC.voxel_size_nm[a] / 2 for a in range(3)]
    hi = [lo[a] + SRC.shape[a] * SRC.voxel_size_nm[a] for a in range(3)]
    inner = np.ones(out.shape, bool)
    for a in range(3):
        c = centres(out, a)
        margin = max(out.voxel_size_nm[a], SRC.voxel_size_nm[a]) + 1e-6
        ok = (c - margin >= lo[a]) & (c + margin <= hi[a])
        sh = [1, 1, 1]
        sh[a] = -1
        inner &= ok.reshape(sh)
    assert inner.sum() > 100
    np.testing.assert_allclose(got[inner], want[inner], rtol=0, atol=2e-3 * np.abs(want).max())


def test_area_weights_hand_computed():
    # 4 nm source from 0, 8 nm output shifted by 2 nm: covers 1/4, 1/2, 1/4 of three voxels
    t = em_axis_taps(0.0, 4.0, 10, 2.0, 8.0, 3)
    np.testing.assert_array_equal(t.index, [[0, 1, 2], [2, 3, 4], [4, 5, 6]])
    np.testing.assert_allclose(t.weight, [[0.25, 0.5, 0.25]] * 3)
    # 5.24 -> 8: first output voxel [0, 8) covers all of voxel 0 and 2.76/5.24 of voxel 1
    t = em_axis_taps(0.0, 5.24, 10, 0.0, 8.0, 2)
    np.testing.assert_allclose(t.weight[0][:2], [5.24 / 8, 2.76 / 8])
    assert t.weight[0][2:].sum() == 0


def test_area_downsampling_of_constant_is_constant_and_uint8_rounds():
    src = np.full((8, 8, 8), 131, np.uint8)
    g_src = G((4.0,) * 3, (2.0,) * 3, (8, 8, 8))
    g_out = G((8.0,) * 3, (4.0,) * 3, (4, 4, 4))
    out = resample_em(src, em_taps(g_src, g_out))
    assert out.dtype == np.uint8 and np.all(out == 131)


def test_identity_taps_are_a_slice_not_arithmetic():
    g = G((4.0,) * 3, (2.0,) * 3, (6, 7, 8))
    src = np.random.default_rng(0).integers(0, 256, g.shape, dtype=np.uint8)
    taps = em_taps(g, g)
    assert all(t.is_identity_slice() for t in taps)
    np.testing.assert_array_equal(resample_em(src, taps), src)


def test_thin_membrane_at_2nm_survives_downsampling_to_8nm():
    # ranks: 0 background, 1 ignore, 2 lumen, 3 membrane (membrane has precedence)
    src = np.full((8, 8, 8), 2, np.uint8)    # lumen everywhere
    src[:, :, 5] = 3                          # a 1-voxel (2 nm) membrane sheet at x index 5
    g_src = G((2.0,) * 3, (1.0,) * 3, (8, 8, 8))
    g_out = G((8.0,) * 3, (4.0,) * 3, (2, 2, 2))
    out = max_pool_taps(src, label_taps(g_src, g_out))
    want = np.empty((2, 2, 2), np.uint8)
    want[:, :, 0] = 2   # x 0..3: lumen only
    want[:, :, 1] = 3   # x 4..7: holds the membrane
    np.testing.assert_array_equal(out, want)


def test_background_needs_full_knowledge_and_class_beats_ignore():
    g_src = G((4.0,) * 3, (2.0,) * 3, (2, 2, 4))
    g_out = G((8.0,) * 3, (4.0,) * 3, (1, 1, 2))
    src = np.zeros((2, 2, 4), np.uint8)
    src[0, 0, 0] = IGNORE_RANK          # block 0: background + one ignore -> ignore
    src[0, 0, 2] = IGNORE_RANK          # block 1: background + ignore + class -> class
    src[1, 1, 3] = 5
    out = max_pool_taps(src, label_taps(g_src, g_out))
    np.testing.assert_array_equal(out, [[[IGNORE_RANK, 5]]])


def test_coarser_labels_upsample_by_repetition_and_outside_is_ignore():
    g_src = G((8.0,) * 3, (4.0,) * 3, (2, 2, 2))
    src = np.arange(2, 10, dtype=np.uint8).reshape(2, 2, 2)
    g_out = G((4.0,) * 3, (2.0,) * 3, (4, 4, 6))       # x runs one 8 nm voxel past the source
    out = max_pool_taps(src, label_taps(g_src, g_out), outside_value=IGNORE_RANK)
    want = np.repeat(np.repeat(np.repeat(src, 2, 0), 2, 1), 2, 2)
    np.testing.assert_array_equal(out[:, :, :4], want)
    assert np.all(out[:, :, 4:] == IGNORE_RANK)


def test_label_taps_equal_grid_is_identity_and_offset_by_whole_voxels_is_a_shift():
    t = label_axis_taps(0.0, 4.0, 10, 8.0, 4.0, 5)
    np.testing.assert_array_equal(t.index[:, 0], [2, 3, 4, 5, 6])
    assert t.is_identity_slice()


def test_slabwise_equals_whole_volume():
    rng = np.random.default_rng(1)
    src_em = rng.integers(0, 256, SRC.shape, dtype=np.uint8)
    src_lab = rng.integers(0, 6, SRC.shape, dtype=np.uint8)
    out = G((8.0, 8.0, 8.0), (60.0, 55.0, 10.0), (20, 14, 12))
    et, lt = em_taps(SRC, out), label_taps(SRC, out)
    full_em, full_lab = resample_em(src_em, et), max_pool_taps(src_lab, lt)
    parts_em, parts_lab = [], []
    for z0 in range(0, out.shape[0], 7):
        z1 = min(z0 + 7, out.shape[0])
        for taps, src, parts, fn in ((et, src_em, parts_em, resample_em), (lt, src_lab, parts_lab, max_pool_taps)):
            tz = subset_taps(taps[0], z0, z1)
            w0, w1 = window_of(tz)
            parts.append(fn(src[w0:w1], (shift_taps(tz, w0), taps[1], taps[2])))
    np.testing.assert_array_equal(np.concatenate(parts_em), full_em)
    np.testing.assert_array_equal(np.concatenate(parts_lab), full_lab)


def test_outside_axis_and_mask_hand_computed():
    # source covers [0, 40) nm; 8 nm output from -8 nm: centres -4, 4, 12, 20, 28, 36, 44
    np.testing.assert_array_equal(outside_axis(0.0, 4.0, 10, -8.0, 8.0, 7),
                                  [True, False, False, False, False, False, True])
    g_src = G((4.0,) * 3, (2.0,) * 3, (10, 10, 10))
    g_out = G((8.0,) * 3, (-4.0, 4.0, 4.0), (3, 2, 2))
    m = outside_mask(g_src, g_out)
    assert m.shape == (3, 2, 2) and m[0].all() and not m[1:].any()


def test_output_shape_rounds_extent():
    assert output_shape((800.0, 1048.0, 99.0), (8.0, 8.0, 8.0)) == (100, 131, 12)
    assert output_shape((2.0, 8.0, 8.0), (8.0, 8.0, 8.0)) == (1, 1, 1)


def test_bad_voxel_size_is_a_cellmap_error():
    with pytest.raises(ResampleError, match="voxel size"):
        em_axis_taps(0.0, 0.0, 10, 0.0, 8.0, 2)
