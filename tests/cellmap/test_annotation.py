"""Annotation status rules on hand-built class groups and on the sample dataset."""

import numpy as np
import pytest

from cellmap import _zarr
from cellmap.annotation import AnnotationError, Status, class_status, crop_status, unknown_value
from cellmap.sample import crop_location

from cellmap_fixtures import ome_attrs

ENC = {"absent": 0, "present": 1, "unknown": 255}


@pytest.mark.parametrize("encoding,counts,want", [
    (ENC, {"absent": 10, "unknown": 0}, None),       # declared but no unknown voxels: 255 is data
    (ENC, {"absent": 10, "unknown": 3}, 255),
    ({"absent": 0, "unknown": 255}, {"absent": 1, "unknown": 1}, 255),
    (ENC, None, None),                                # no counts: cannot tell, treat as data
    ({"absent": 0, "present": 1}, {"absent": 1, "unknown": 5}, None),  # not declared
    ({}, {"absent": 1, "unknown": 5}, None),
])
def test_unknown_value_rule(encoding, counts, want):
    assert unknown_value(encoding, counts) == want


def _class(crop, name, data, counts=None, write_s0_attrs=True, encoding=ENC):
    g = _zarr.create_group(f"{crop}/{name}", {"cellmap": {"annotation": {
        "class_name": name, "annotation_type": {"type": "semantic_segmentation", "encoding": encoding}}}})
    g.attrs.update(ome_attrs([[4, 4, 4]], [[2, 2, 2]]))
    attrs = None
    if write_s0_attrs:
        ann = {"class_name": name}
        if counts is not None:
            ann["complement_counts"] = counts
        attrs = {"cellmap": {"annotation": ann}}
    _zarr.create_array(g, "s0", data, chunks=(2, 4, 4), attrs=attrs)


@pytest.fixture
def crop(tmp_path):
    c = str(tmp_path / "x.zarr" / "crop9")
    _zarr.create_group(str(tmp_path / "x.zarr"))
    _zarr.create_group(c)
    z = np.zeros((4, 8, 8), np.uint8)
    one = z.copy()
    one[3, 7, 7] = 1                      # a single positive voxel in the last chunk
    unk = z.copy()
    unk[:2] = 255                         # only unknown voxels, declared
    _class(c, "mito_mem", one, counts={"absent": 255, "unknown": 0})
    _class(c, "mito_lum", z, counts={"absent": 256, "unknown": 0})
    _class(c, "mito_ribo", one, write_s0_attrs=False)           # read: positive found
    _class(c, "er_mem", z, write_s0_attrs=False)                 # read: absent
    _class(c, "er_lum", unk, counts={"absent": 128, "unknown": 128})
    _class(c, "golgi", z, counts={"absent": 256, "unknown": 0})
    _class(c, "ecs", z, counts={"absent": 300, "unknown": 0})    # counts exceed the array
    return c


def test_statuses_and_their_sources(crop):
    st = crop_status(crop, ["mito_mem", "mito_lum", "mito_ribo", "er_mem", "er_lum", "mito", "golgi_mem", "nuc",
                            "er"])
    got = {k: (v.status, v.source) for k, v in st.items()}
    assert got["mito_mem"] == (Status.ANNOTATED, "complement_counts") and st["mito_mem"].positive_voxels == 1
    assert got["mito_lum"] == (Status.ABSENT, "complement_counts")
    assert got["mito_ribo"] == (Status.ANNOTATED, "read")
    assert got["er_mem"] == (Status.ABSENT, "read")
    assert got["er_lum"] == (Status.ABSENT, "complement_counts") and st["er_lum"].unknown_value == 255
    assert got["mito"] == (Status.ANNOTATED, "union") and st["mito"].members == ("mito_mem", "mito_lum", "mito_ribo")
    assert got["golgi_mem"] == (Status.ABSENT, "superset_absent")
    assert got["nuc"] == (Status.UNKNOWN, "missing") and not st["nuc"].annotated
    assert got["er"] == (Status.UNKNOWN, "missing")   # er needs eres, ne, np atoms too
    assert class_status(crop, "mito", derive=False).status is Status.UNKNOWN
    assert class_status(crop, "er_mem", check_contents=False).source == "group"


def test_inconsistent_counts_raise(crop):
    with pytest.raises(AnnotationError, match=r"crop9/ecs/s0/.zattrs: complement_counts .* sum to 300 .* has 256"):
        class_status(crop, "ecs")


def test_sample_statuses(sample_dir):
    c1 = crop_location(sample_dir, "jrc_synth-a", "crop1")
    st = crop_status(c1, ["mito", "golgi_mem", "golgi_lum", "golgi", "nuc", "ves", "er_mem"])
    assert (st["golgi_mem"].status, st["golgi_mem"].source) == (Status.ABSENT, "complement_counts")
    assert (st["golgi_lum"].status, st["golgi_lum"].source) == (Status.ABSENT, "read")
    assert (st["golgi"].status, st["golgi"].source) == (Status.ABSENT, "union")
    assert st["nuc"].status is Status.UNKNOWN and st["ves"].status is Status.UNKNOWN
    assert st["mito"].status is Status.ANNOTATED and st["er_mem"].status is Status.ANNOTATED
    c3 = crop_location(sample_dir, "jrc_synth-b", "crop3")
    st3 = crop_status(c3, ["nuc", "ne_mem", "mito"])
    assert st3["nuc"].status is Status.ANNOTATED and st3["nuc"].unknown_value is None  # 255 is an instance id
    assert st3["ne_mem"].status is Status.UNKNOWN and st3["mito"].status is Status.UNKNOWN
    c5 = crop_location(sample_dir, "jrc_synth-b", "crop5")
    st5 = crop_status(c5, ["ves", "golgi", "endo"])
    assert all(s.source == "union" and s.status is Status.ANNOTATED for s in st5.values())
