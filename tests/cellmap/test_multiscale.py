"""OME-NGFF multiscale parsing: a table of valid and invalid metadata, level choice."""

import copy

import pytest

from cellmap import _zarr
from cellmap.grid import Grid
from cellmap.multiscale import MultiscaleError, choose_level, parse_multiscales, read_multiscale

from cellmap_fixtures import ome_attrs, write_json

SCALES = [[5.24, 4, 4], [10.48, 8, 8], [20.96, 16, 16]]
TRANS = [[0, 40, 80], [2.62, 42, 82], [7.86, 46, 86]]
SHAPES = {"s0": (40, 64, 80), "s1": (20, 32, 40), "s2": (10, 16, 20)}


def good():
    return ome_attrs(SCALES, TRANS)


def test_valid_metadata_parses_to_grids():
    ms = parse_multiscales(good(), SHAPES, location="x.zarr/raw")
    assert ms.paths == ("s0", "s1", "s2")
    assert ms["s1"].grid == Grid((10.48, 8, 8), (2.62, 42, 82), (20, 32, 40))
    assert ms[2].voxel_size_nm == (20.96, 16, 16)
    assert ms.array_location("s2") == "x.zarr/raw/s2"
    # all levels share the low corner
    assert ms["s2"].grid.corner_nm == pytest.approx(ms["s0"].grid.corner_nm)


def _mut(fn):
    a = copy.deepcopy(good())
    fn(a["multiscales"][0])
    return a


BAD = [
    ("no multiscales", {"cellmap": {}}, "no 'multiscales'"),
    ("wrong unit", _mut(lambda m: m["axes"][1].update(unit="micrometer")), "unit 'micrometer'.*nanometer"),
    ("missing unit", _mut(lambda m: m["axes"][0].pop("unit")), "unit None"),
    ("axis order xyz", _mut(lambda m: m["axes"].reverse()), r"\['x', 'y', 'z'\]"),
    ("channel axis", _mut(lambda m: m["axes"][0].update(type="channel")), "type 'channel'"),
    ("missing translation", _mut(lambda m: m["datasets"][1]["coordinateTransformations"].pop(1)),
     "'s1' has a scale but no translation"),
    ("translation first", _mut(lambda m: m["datasets"][0]["coordinateTransformations"].reverse()),
     "first must be 'scale'"),
    ("two scales", _mut(lambda m: m["datasets"][0]["coordinateTransformations"].append({"type": "scale", "scale": [1, 1, 1]})),
     "only \\['scale', 'translation'\\]"),
    ("non-2x levels", _mut(lambda m: m["datasets"][1]["coordinateTransformations"][0].update(scale=[15.72, 12, 12])),
     "'s1' voxel size .* 2x on every axis"),
    ("corner drift", _mut(lambda m: m["datasets"][2]["coordinateTransformations"][1].update(translation=[0, 40, 80])),
     "'s2' translation .* low corner"),
    ("scale of 2 numbers", _mut(lambda m: m["datasets"][0]["coordinateTransformations"][0].update(scale=[4, 4])),
     "list of 3 numbers"),
    ("version 0.5", _mut(lambda m: m.update(version="0.5")), "only OME-NGFF '0.4'"),
    ("no datasets", _mut(lambda m: m.update(datasets=[])), "no 'datasets'"),
]


@pytest.mark.parametrize("name,attrs,pattern", BAD, ids=[b[0] for b in BAD])
def test_invalid_metadata_names_the_group_and_the_problem(name, attrs, pattern):
    with pytest.raises(MultiscaleError, match=pattern) as info:
        parse_multiscales(attrs, SHAPES, location="/data/jrc_x.zarr/recon-1/em/fibsem-uint8")
    assert "/data/jrc_x.zarr/recon-1/em/fibsem-uint8/.zattrs" in str(info.value)


def test_relaxed_options():
    no_tr = _mut(lambda m: m["datasets"][0]["coordinateTransformations"].pop(1))
    ms = parse_multiscales(no_tr, SHAPES, require_translation=False, strict_pyramid=False)
    assert ms["s0"].translation_nm == (0, 0, 0)
    odd = _mut(lambda m: m["datasets"][1]["coordinateTransformations"][0].update(scale=[15.72, 12, 12]))
    assert parse_multiscales(odd, SHAPES, strict_pyramid=False)["s1"].voxel_size_nm == (15.72, 12, 12)


def test_read_multiscale_from_store_and_missing_level(tmp_path):
    g = _zarr.create_group(str(tmp_path / "r.zarr"))
    import numpy as np
    for p, shp in SHAPES.items():
        _zarr.create_array(g, p, np.zeros(shp, np.uint8), chunks=(8, 16, 16))
    g.attrs.update(good())
    ms = read_multiscale(str(tmp_path / "r.zarr"))
    assert ms["s2"].shape == (10, 16, 20)
    bad = good()
    bad["multiscales"][0]["datasets"].append({"path": "s3", "coordinateTransformations": [
        {"type": "scale", "scale": [41.92, 32, 32]}, {"type": "translation", "translation": [18.34, 54, 94]}]})
    write_json(str(tmp_path / "r.zarr" / ".zattrs"), bad)
    with pytest.raises(MultiscaleError, match="lists level 's3' but its array is missing"):
        read_multiscale(str(tmp_path / "r.zarr"))
    with pytest.raises(_zarr.ZarrNotFoundError, match="no such zarr"):
        read_multiscale(str(tmp_path / "nope.zarr"))


def test_choose_level_rules():
    ms = parse_multiscales(good(), SHAPES)
    assert choose_level(ms, (10.48, 8, 8)).path == "s1"
    assert choose_level(ms, 8).path == "s0"            # s1 is 10.48 nm in z > 8 * 1.05
    assert choose_level(ms, (11, 8, 8)).path == "s1"
    assert choose_level(ms, 16, rule="nearest").path == "s2"
    assert choose_level(ms, 16).path == "s1"
    assert choose_level(ms, 2).path == "s0"            # finer than s0: falls back to s0
    with pytest.raises(MultiscaleError, match="no level is as fine as"):
        choose_level(ms, 2, fallback="error")
    assert choose_level(ms, 16, rule="not_finer").path == "s2"
    assert choose_level(ms, 100, rule="not_finer").path == "s2"
    assert choose_level(ms, 32, exclude=["s2"]).path == "s1"
    with pytest.raises(MultiscaleError, match="unknown level rule"):
        choose_level(ms, 8, rule="closest")
