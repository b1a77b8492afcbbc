"""The embedded sample dataset: metadata by hand, planted conditions, EM statistics, determinism."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cellmap.annotation import crop_status
from cellmap.datasplit import read_datasplit
from cellmap.grid import Grid
from cellmap.io import missing_fraction, missing_mask, read_box, read_grid
from cellmap.multiscale import read_multiscale
from cellmap.sample import SAMPLE_CROPS, build_sample, crop_location, raw_location

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _zattrs(path):
    with open(os.path.join(path, ".zattrs")) as f:
        return json.load(f)


def test_raw_metadata_by_hand(sample_dir):
    a = _zattrs(raw_location(sample_dir, "jrc_synth-a"))["multiscales"][0]
    assert [d["path"] for d in a["datasets"]] == ["s0", "s1", "s2"] and a["version"] == "0.4"
    assert [ax["unit"] for ax in a["axes"]] == ["nanometer"] * 3
    t = a["datasets"][1]["coordinateTransformations"]
    assert t[0] == {"type": "scale", "scale": [10.48, 8.0, 8.0]}
    assert t[1] == {"type": "translation", "translation": [2.62, 2.0, 2.0]}
    b = _zattrs(raw_location(sample_dir, "jrc_synth-b"))["multiscales"][0]
    assert b["datasets"][0]["coordinateTransformations"][1]["translation"] == [36.0, 20.0, 44.0]
    assert b["datasets"][2]["coordinateTransformations"][1]["translation"] == [42.0, 26.0, 50.0]
    with open(os.path.join(raw_location(sample_dir, "jrc_synth-b"), "s0", ".zarray")) as f:
        za = json.load(f)
    assert za["dimension_separator"] == "/" and za["dtype"] == "|u1" and za["zarr_format"] == 2
    assert za["chunks"] == [16, 24, 32] and za["shape"] == [96, 128, 192]
    assert set(_zattrs(raw_location(sample_dir, "jrc_synth-b"))) == {"multiscales"}


# hand-computed label grids: raw corner + anchor * raw voxel + label voxel / 2
CROPS = {
    "crop1": ("jrc_synth-a", (2.62, 2, 2), (40.61, 63, 63), (80, 80, 80)),
    "crop2": ("jrc_synth-b", (4, 4, 4), (272, -4, 604), (40, 48, 48)),
    "crop3": ("jrc_synth-b", (16, 16, 16), (58, 58, 66), (16, 24, 24)),
    "crop4": ("jrc_synth-a", (5.24, 4, 4), (83.84, 256, 384), (32, 48, 48)),
    "crop5": ("jrc_synth-b", (2, 2, 2), (67, 307, 643), (80, 80, 80)),
}


@pytest.mark.parametrize("crop", sorted(CROPS))
def test_crop_grids_and_attributes(sample_dir, crop):
    ds, vs, tr, shape = CROPS[crop]
    loc = crop_location(sample_dir, ds, crop)
    spec = {s.crop: s for s in SAMPLE_CROPS}[crop]
    for name in spec.classes + ("all",):
        m = _zattrs(os.path.join(loc, name))
        t = m["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert t[0]["scale"] == pytest.approx(vs) and t[1]["translation"] == pytest.approx(tr)
        ann = m["cellmap"]["annotation"]
        assert ann["class_name"] == name and ann["annotation_type"]["encoding"]["unknown"] == 255
        with open(os.path.join(loc, name, "s0", ".zarray")) as f:
            assert json.load(f)["shape"] == list(shape)
        s0 = os.path.join(loc, name, "s0", ".zattrs")
        if name in spec.no_s0_attrs:
            assert not os.path.exists(s0)
        else:
            cc = _zattrs(os.path.join(loc, name, "s0"))["cellmap"]["annotation"]["complement_counts"]
            import zarr
            data = np.asarray(zarr.open_array(os.path.join(loc, name, "s0"), mode="r"))
            assert cc == {"absent": int((data == 0).sum()), "unknown": 0}
    assert _zattrs(loc)["cellmap"]["annotation"]["class_names"] == list(spec.classes)


def test_label_resolutions_relative_to_raw(sample_dir):
    a, b = (read_multiscale(raw_location(sample_dir, d)) for d in ("jrc_synth-a", "jrc_synth-b"))
    g = {c: Grid(*CROPS[c][1:]) for c in CROPS}
    # 2x finer: label s1 (= 2x coarser label grid) coincides with raw s0 at a whole index
    assert g["crop1"].resampled((5.24, 4, 4)).offset_in(a["s0"].grid) == (8, 16, 16)
    assert g["crop5"].resampled((4, 4, 4)).offset_in(b["s0"].grid) == (8, 72, 150)
    # equal to raw s0, and coarse on raw s2's grid
    assert g["crop4"].same_voxel_size(a["s0"].grid) and g["crop4"].offset_in(a["s0"].grid) == (16, 64, 96)
    assert g["crop3"].same_voxel_size(b["s2"].grid) and g["crop3"].offset_in(b["s2"].grid) == (1, 2, 1)


def test_crop2_is_partly_outside_raw(sample_dir):
    b = read_multiscale(raw_location(sample_dir, "jrc_synth-b"))
    data, outside = read_grid(b, "s0", Grid(*CROPS["crop2"][1:]))
    # s0 window z 59..99 (raw has 96), y -6..42: inside = 37 x 42 x 48
    assert outside.sum() == 40 * 48 * 48 - 37 * 42 * 48
    assert outside[-3:].all() and outside[:, :6].all() and not outside[:37, 6:].any()
    assert data[~outside].min() > 0


def test_missing_raw_chunks(sample_dir):
    a = read_multiscale(raw_location(sample_dir, "jrc_synth-a"))
    b = read_multiscale(raw_location(sample_dir, "jrc_synth-b"))
    box = {c: Grid(*CROPS[c][1:]).box for c in CROPS}
    assert missing_fraction(a, "s0", box["crop4"]) == pytest.approx(0.5)
    m = missing_mask(a, "s0", box["crop4"])
    assert m[:16].all() and not m[16:].any()                 # the first half in z
    em, _ = read_box(a, "s0", box["crop4"])
    assert (em[:16] == 0).all() and (em[16:] > 0).all()      # silent zeros where chunks are missing
    assert missing_fraction(a, "s1", box["crop4"]) == 0.0
    assert missing_fraction(b, "s0", box["crop3"]) == 1.0 and missing_fraction(b, "s1", box["crop3"]) == 1.0
    assert missing_fraction(b, "s2", box["crop3"]) == 0.0
    for c in ("crop1", "crop5"):
        assert missing_fraction(a if CROPS[c][0] == "jrc_synth-a" else b, "s0", box[c]) == 0.0
    assert missing_fraction(b, "s0", box["crop2"]) == 0.0


def test_em_statistics_and_membrane_contrast(sample_dir):
    for d in ("jrc_synth-a", "jrc_synth-b"):
        ms = read_multiscale(raw_location(sample_dir, d))
        s0 = read_box(ms, "s0", ms["s0"].grid.box)[0]
        present = s0[~missing_mask(ms, "s0", ms["s0"].grid.box)]
        assert 120 <= present.mean() <= 135 and 15 <= present.std() <= 25, (present.mean(), present.std())
    # under crop4 (same grid as raw s0), second half in z (chunks present)
    a = read_multiscale(raw_location(sample_dir, "jrc_synth-a"))
    em = read_grid(a, "s0", Grid(*CROPS["crop4"][1:]))[0][16:].astype(float)
    import zarr
    loc = crop_location(sample_dir, "jrc_synth-a", "crop4")
    lab = {n: np.asarray(zarr.open_array(f"{loc}/{n}/s0", mode="r"))[16:] > 0 for n in ("mito_mem", "mito_lum",
                                                                                        "cyto", "pm")}
    assert em[lab["mito_lum"]].mean() - em[lab["mito_mem"]].mean() >= 10
    assert em[lab["cyto"]].mean() - em[lab["pm"]].mean() >= 10


def test_datasplit_rows_and_top_level_file(sample_dir):
    rows = read_datasplit(os.path.join(sample_dir, "datasplit.csv"))
    assert [(r.dataset, r.crop, r.usage) for r in rows] == [(s.dataset, s.crop, s.usage) for s in SAMPLE_CROPS]
    assert "validate" in {r.usage for r in rows}
    assert rows[0].raw_root == os.path.join(sample_dir, "jrc_synth-a", "jrc_synth-a.zarr")
    with open(os.path.join(sample_dir, "datasplit.csv")) as f:
        mine = f.read()
    with open(os.path.join(REPO, "datasplit.csv")) as f:
        top = f.read()
    # same rows, with roots under data/
    assert top.replace('"data/', '"') == mine
    status = crop_status(rows[0].crop_location, rows[0].classes)
    assert all(s.annotated for s in status.values())  # every bracketed class has its group


def test_cli_build_is_deterministic_and_resumes(sample_dir, tmp_path):
    out = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "cellmap.sample", str(out), "--quiet"], check=True, cwd=REPO,
                   env=dict(os.environ, PYTHONPATH=REPO))

    def digest(root):
        h = {}
        for dp, _, files in os.walk(root):
            for f in files:
                if f.endswith((".zarray", ".zgroup", ".zattrs", ".json")):
                    continue   # metadata JSON layout differs between zarr 2 and 3 writers; data must not
                p = os.path.join(dp, f)
                with open(p, "rb") as fh:
                    h[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
        return h

    assert digest(out) == digest(sample_dir)
    stamp = os.path.getmtime(out / "jrc_synth-a")
    build_sample(str(out), quiet=True)                     # already built: skipped
    assert os.path.getmtime(out / "jrc_synth-a") == stamp
