"""auto3dseg.zarr_window against zarr itself: windows in any order, chunk-row cache, missing chunks, fallback."""

import os
import shutil

import numpy as np
import pytest

from cellmap import _zarr

from auto3dseg.zarr_window import WindowReader


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("zw") / "a.zarr")
    g = _zarr.create_group(root)
    rng = np.random.default_rng(3)
    data = rng.integers(0, 65535, (37, 29, 41), dtype=np.uint16)
    _zarr.create_array(g, "s0", data, chunks=(8, 16, 16))
    return os.path.join(root, "s0"), data


def test_windows_equal_numpy_slices_in_any_order(store):
    loc, data = store
    r = WindowReader(loc)
    assert r._fast and r.dtype == np.uint16
    windows = [((z, 3, 5), (min(z + 5, 37), 29, 40)) for z in range(0, 37, 5)]  # z order: cache reused
    windows += [((30, 0, 0), (37, 29, 41)), ((0, 10, 10), (9, 20, 30)), ((7, 0, 0), (8, 1, 1))]
    for start, stop in windows:
        got, miss = r.read(start, stop)
        assert miss is None
        np.testing.assert_array_equal(got, data[tuple(slice(a, b) for a, b in zip(start, stop))])


def test_missing_chunks_read_as_fill_value_and_are_masked(store, tmp_path):
    loc, data = store
    copy = str(tmp_path / "s0")
    shutil.copytree(loc, copy)
    os.remove(os.path.join(copy, "1", "0", "1"))        # chunk z 8..15, y 0..15, x 16..31
    got, miss = WindowReader(copy).read((4, 0, 0), (20, 29, 41))
    want_miss = np.zeros((16, 29, 41), np.uint8)
    want_miss[4:12, 0:16, 16:32] = 1
    np.testing.assert_array_equal(miss, want_miss)
    assert np.all(got[miss == 1] == 0)
    np.testing.assert_array_equal(got[miss == 0], data[4:20][miss == 0])


def test_zarr_path_gives_the_same_data_and_missing_mask(store, tmp_path):
    loc, data = store
    copy = str(tmp_path / "s0z")
    shutil.copytree(loc, copy)
    os.remove(os.path.join(copy, "0", "1", "2"))
    fast, slow = WindowReader(copy), WindowReader(copy, fast=False)
    assert fast._fast and not slow._fast
    a, ma = fast.read((0, 5, 5), (12, 29, 41))
    b, mb = slow.read((0, 5, 5), (12, 29, 41))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert ma.sum() == 8 * 13 * 9          # chunk z 0..7, y 16..28, x 32..40 inside the window
