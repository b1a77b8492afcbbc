"""Bad input raises DataError naming the file."""

import numpy as np
import pytest
import tifffile

from seg2d.errors import DataError, Seg2DError
from seg2d.io import load_dataset, read_mask
from seg2d_synth import make_frame, write_dataset


@pytest.fixture
def ds(tmp_path):
    return write_dataset(tmp_path / "ds", [make_frame(s) for s in range(2)])


def test_loads_pairs_and_splits_binary_masks(ds):
    binary = (tifffile.imread(ds / "masks" / "frame001.tif") > 0).astype(np.uint8) * 255
    tifffile.imwrite(ds / "masks" / "frame001.tif", binary)
    frames = load_dataset(ds)
    assert [f.name for f in frames] == ["frame000", "frame001"]
    assert frames[0].image.dtype == np.float32 and frames[0].mask.shape == (64, 64)
    assert frames[1].mask.max() == make_frame(1)[1].max()  # separate disks -> one label each


def test_mask_without_image(ds):
    (ds / "images" / "frame001.tif").unlink()
    with pytest.raises(DataError, match=r"frame001\.tif: mask has no image"):
        load_dataset(ds)


def test_image_without_mask(ds):
    (ds / "masks" / "frame000.tif").unlink()
    with pytest.raises(DataError, match=r"images/frame000\.tif: image has no mask"):
        load_dataset(ds)


def test_mismatched_shapes(ds):
    tifffile.imwrite(ds / "masks" / "frame000.tif", np.ones((60, 64), np.uint16))
    with pytest.raises(DataError, match=r"masks/frame000\.tif: mask shape \(60, 64\) differs"):
        load_dataset(ds)


def test_empty_mask(ds):
    tifffile.imwrite(ds / "masks" / "frame001.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(DataError, match=r"frame001\.tif: mask is empty"):
        load_dataset(ds)


@pytest.mark.parametrize("shape,word", [((5, 64, 64), "2D"), ((64, 64, 3), "RGB")])
def test_3d_and_rgb_rejected(ds, shape, word):
    tifffile.imwrite(ds / "images" / "frame000.tif", np.zeros(shape, np.float32))
    with pytest.raises(Seg2DError, match=rf"images/frame000\.tif: image has shape .*{word}"):
        load_dataset(ds)


def test_3d_mask_rejected(tmp_path):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.ones((3, 8, 8), np.uint16))
    with pytest.raises(DataError, match=r"m\.tif: mask has shape \(3, 8, 8\)"):
        read_mask(path)
