"""open_crop on the sample dataset: grids, class arrays, derived groups, errors."""

import os
import shutil

import numpy as np
import pytest

from cellmap.annotation import Status
from cellmap.crop import CropError, open_crop
from cellmap.datasplit import DatasplitError, read_datasplit
from cellmap.io import read_box
from cellmap.multiscale import choose_level

from cellmap_fixtures import write_json


@pytest.fixture(scope="module")
def rows(sample_dir):
    return {r.crop: r for r in read_datasplit(os.path.join(sample_dir, "datasplit.csv"))}


def test_crop1_grid_classes_and_raw(rows):
    c = open_crop(rows["crop1"])
    assert c.name == "jrc_synth-a_crop1"
    # hand-computed: raw corner (-2.62, -2, -2) + (8, 16, 16) raw voxels + half a label voxel
    assert c.label_grid.voxel_size_nm == pytest.approx((2.62, 2, 2))
    assert c.label_grid.translation_nm == pytest.approx((40.61, 63, 63))
    assert c.label_grid.shape == (80, 80, 80)
    assert c.status["golgi_mem"].status is Status.ABSENT and "golgi_mem" in c.annotated()
    mito = c.read_class("mito")
    mem, lum, ribo = (c.read_class(n) for n in ("mito_mem", "mito_lum", "mito_ribo"))
    assert mito.shape == (80, 80, 80) and len(np.unique(mito)) >= 3          # >= 2 instances + background
    np.testing.assert_array_equal(mito > 0, (mem | lum | ribo) > 0)          # group = union of its atoms here
    assert not c.read_class("golgi_lum").any()
    with pytest.raises(CropError, match="'nuc' is not annotated in this crop"):
        c.read_class("nuc")
    lv = choose_level(c.raw, c.label_grid.voxel_size_nm)
    assert lv.path == "s0"
    em, outside = read_box(c.raw, lv, c.label_grid.box)
    assert em.shape == (40, 40, 40) and not outside.any() and em.min() > 0


def test_derived_union_and_unknown_mask(rows):
    c = open_crop(rows["crop5"], classes=["ves", "golgi", "ves_mem", "nuc"])
    assert c.status["ves"].source == "union" and c.status["nuc"].status is Status.UNKNOWN
    ves = c.read_class("ves")
    want = (c.read_class("ves_mem") > 0) | (c.read_class("ves_lum") > 0)
    assert ves.dtype == np.uint8 and ves.any()
    np.testing.assert_array_equal(ves.astype(bool), want)
    assert c.unknown_mask("ves_mem") is None
    c3 = open_crop(rows["crop3"])
    nuc = c3.read_class("nuc")
    assert nuc.dtype == np.uint16 and set(np.unique(nuc)) == {0, 255, 300}
    assert c3.unknown_mask("nuc") is None   # 255 is an object here, not "unknown"


def test_grid_disagreement_and_missing_crop(rows, sample_dir, tmp_path):
    src = os.path.join(sample_dir, "jrc_synth-b")
    dst = tmp_path / "jrc_synth-b"
    shutil.copytree(src, dst)
    row = rows["crop2"]
    import dataclasses
    moved = dataclasses.replace(row, raw_root=str(dst / "jrc_synth-b.zarr"), gt_root=str(dst / "jrc_synth-b.zarr"))
    zattrs = dst / "jrc_synth-b.zarr" / "recon-1/labels/groundtruth/crop2/er_mem/.zattrs"
    import json
    attrs = json.loads(zattrs.read_text())
    for ds in attrs["multiscales"][0]["datasets"]:
        ds["coordinateTransformations"][1]["translation"][2] += 4.0   # one voxel along x
    write_json(str(zattrs), attrs)
    with pytest.raises(CropError, match="class 'er_mem' s0 grid .* differs from"):
        open_crop(moved)
    gone = dataclasses.replace(moved, crop_path="recon-1/labels/groundtruth/crop77")
    with pytest.raises(DatasplitError, match="crop group .*crop77 does not exist"):
        open_crop(gone)
