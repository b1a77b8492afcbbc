"""Submission hierarchies: write/read round trips, grid views, zip, and scoring two real hierarchies."""

import csv
import json
import math
import os
import zipfile

import numpy as np
import pytest

from cellmap.evaluate import ScoringConfig, evaluate_hierarchies, write_report
from cellmap.grid import Grid
from cellmap.submission import (
    LabelWriter,
    OnGrid,
    SubmissionError,
    crop_name,
    read_hierarchy,
    write_label,
    zip_submission,
)

# a CellMap-like crop grid: anisotropic z, translation with the 0.5-voxel fraction
GRID = Grid((2.62, 2.0, 2.0), (3132.21, 899.0, 25863.0), (6, 10, 12))
CFG = ScoringConfig(progress=False)


def test_write_read_round_trip(tmp_path):
    root = tmp_path / "submission.zarr"
    data = np.zeros(GRID.shape, np.uint32)
    data[1:3, 2:5, 3:7] = 300  # an instance ID above 255 must not wrap
    path = write_label(root, 7, "mito", data, GRID)
    assert path.endswith(os.path.join("crop7", "mito"))
    meta = json.loads((root / "crop7" / "mito" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and np.dtype(meta["dtype"]) == np.uint16
    attrs = json.loads((root / "crop7" / "mito" / ".zattrs").read_text())
    assert attrs["voxel_size"] == [2.62, 2.0, 2.0]
    assert attrs["translation"] == [3132.21, 899.0, 25863.0]
    assert (root / ".zgroup").exists() and (root / "crop7" / ".zgroup").exists()
    h = read_hierarchy(root)
    assert list(h) == ["crop7"] and list(h["crop7"]) == ["mito"]
    la = h["crop7"]["mito"]
    assert la.grid == GRID
    np.testing.assert_array_equal(np.asarray(la.array[:]), data)
    # no temporary folders are left behind
    assert [n for n in os.listdir(root / "crop7") if n.startswith(".") and "tmp" in n] == []


def test_writer_failure_leaves_old_array(tmp_path):
    root = tmp_path / "s.zarr"
    write_label(root, "crop3", "ecs", np.ones(GRID.shape, bool), GRID)
    with pytest.raises(RuntimeError):
        with LabelWriter(root, 3, "ecs", GRID, np.uint8) as w:
            w.write(0, np.zeros((2,) + GRID.shape[1:], np.uint8))
            raise RuntimeError("interrupted")
    got = read_hierarchy(root)["crop3"]["ecs"]
    assert np.asarray(got.array[:]).min() == 1  # the complete old array is still there
    assert [n for n in os.listdir(root / "crop3") if "tmp" in n or "old" in n] == []


def test_attribute_aliases_and_ngff_groups(tmp_path):
    import zarr
    from cellmap import _zarr

    root = tmp_path / "truth.zarr"
    g = _zarr.create_group(str(root))
    c = _zarr.create_group(str(root / "crop12"))
    _zarr.create_array(c, "ecs", np.ones((2, 3, 4), np.uint8), (2, 3, 4),
                       attrs={"resolution": [8, 8, 8], "offset": [4, 4, 4]})
    ms = _zarr.create_group(str(root / "crop12" / "nuc"), attrs={"multiscales": [{
        "version": "0.4", "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [32.0, 32.0, 32.0]},
            {"type": "translation", "translation": [16.0, 48.0, 80.0]}]}]}]})
    _zarr.create_array(ms, "s0", np.zeros((1, 2, 2), np.uint16), (1, 2, 2))
    _zarr.create_array(c, "all", np.zeros((2, 3, 4), np.uint8), (2, 3, 4),
                       attrs={"voxel_size": [8, 8, 8], "translation": [4, 4, 4]})
    del g, zarr
    h = read_hierarchy(root)
    assert set(h["crop12"]) == {"ecs", "nuc"}  # "all" is skipped
    assert h["crop12"]["ecs"].grid == Grid((8, 8, 8), (4, 4, 4), (2, 3, 4))
    assert h["crop12"]["nuc"].grid == Grid((32, 32, 32), (16, 48, 80), (1, 2, 2))


def test_missing_attributes_name_the_array(tmp_path):
    from cellmap import _zarr

    root = tmp_path / "bad.zarr"
    _zarr.create_group(str(root))
    c = _zarr.create_group(str(root / "crop1"))
    _zarr.create_array(c, "ecs", np.ones((2, 2, 2), np.uint8), (2, 2, 2))
    with pytest.raises(SubmissionError, match=r"crop1/ecs.*voxel size"):
        read_hierarchy(root)
    with pytest.raises(SubmissionError, match="no such folder"):
        read_hierarchy(tmp_path / "nowhere.zarr")


def test_crop_names():
    assert crop_name(7) == crop_name("7") == crop_name("crop7") == "crop7"
    with pytest.raises(SubmissionError):
        crop_name("seven")


def test_on_grid_known_transforms():
    src = np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6) + 1
    g = Grid((4.0, 4.0, 4.0), (2.0, 2.0, 2.0), (4, 5, 6))
    # a target grid offset by whole voxels (+1 z, -2 y, +3 x) and larger: shifted slice, zero pad
    t = Grid((4.0, 4.0, 4.0), (6.0, -6.0, 14.0), (4, 5, 6))
    v = OnGrid(src, g, t)
    out = v[:]
    exp = np.zeros((4, 5, 6), np.int32)
    exp[0:3, 2:5, 0:3] = src[1:4, 0:3, 3:6]
    np.testing.assert_array_equal(out, exp)
    np.testing.assert_array_equal(v[1:3], exp[1:3])
    # a target twice as fine covering the same box: each source voxel becomes a 2x2x2 block
    fine = Grid((2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (8, 10, 12))
    up = OnGrid(src, g, fine)[:]
    np.testing.assert_array_equal(up, src.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    # and back down to the coarse grid lands on the same values
    np.testing.assert_array_equal(OnGrid(up, fine, g)[:], src)


def test_zip_layout(tmp_path):
    root = tmp_path / "submission.zarr"
    write_label(root, 1, "ecs", np.ones(GRID.shape, bool), GRID)
    z = zip_submission(root)
    assert z == tmp_path / "submission.zip"
    names = zipfile.ZipFile(z).namelist()
    assert ".zgroup" in names and "crop1/.zgroup" in names
    assert "crop1/ecs/.zarray" in names and "crop1/ecs/.zattrs" in names
    assert not [n for n in names if "tmp" in n]


def _write_pair(tmp_path):
    """Truth and prediction hierarchies with hand-known scores.

    crop1 (GRID): ecs truth 40 voxels, prediction shifted one x voxel (tp 32? see below);
    mito truth two 2x2x2 objects, prediction finds one exactly.
    crop2: ecs only, predicted perfectly; mito not annotated in crop2.
    The prediction of crop1 is written on a larger grid offset by whole voxels.
    """
    truth, pred = tmp_path / "truth.zarr", tmp_path / "pred.zarr"
    ecs = np.zeros(GRID.shape, np.uint8)
    ecs[0:2, 0:4, 0:5] = 1  # 40 voxels
    mito = np.zeros(GRID.shape, np.uint16)
    mito[1:3, 1:3, 1:3] = 1
    mito[4:6, 6:8, 8:10] = 2
    write_label(truth, 1, "ecs", ecs, GRID)
    write_label(truth, 1, "mito", mito, GRID)
    g2 = Grid((8.0, 8.0, 8.0), (4.0, 4.0, 4.0), (3, 3, 3))
    write_label(truth, 2, "ecs", np.ones(g2.shape, np.uint8), g2)
    # prediction of crop1 on a grid 1 voxel larger on each side
    big = GRID.sub_grid((-1, -1, -1), tuple(s + 1 for s in GRID.shape))
    p_ecs = np.zeros(big.shape, np.uint8)
    p_ecs[1:3, 1:5, 2:7] = 1  # = truth shifted +1 in x on the crop grid: tp 32, fp 8, fn 8
    p_mito = np.zeros(big.shape, np.uint8)
    p_mito[2:4, 2:4, 2:4] = 1  # the first object exactly
    write_label(pred, 1, "ecs", p_ecs, big)
    write_label(pred, 1, "mito", p_mito, big)
    write_label(pred, 2, "ecs", np.ones(g2.shape, np.uint8), g2)
    return truth, pred


def test_evaluate_hierarchies_hand_computed(tmp_path):
    truth, pred = _write_pair(tmp_path)
    s = evaluate_hierarchies(truth, pred, config=CFG)
    rows = {(r.crop, r.class_name): r.counts for r in s.crops}
    assert set(rows) == {("crop1", "ecs"), ("crop1", "mito"), ("crop2", "ecs")}
    e1 = rows["crop1", "ecs"]
    assert (e1.tp, e1.fp, e1.fn) == (32, 8, 8)
    m = rows["crop1", "mito"]
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    cap = min(2.62 * 6, 2 * 10, 2 * 12) / 2
    assert m.hausdorff_sum_nm == pytest.approx(cap)
    # ecs pooled over crops: tp 32 + 27, fp 8, fn 8
    ecs = s.classes["ecs"]
    assert ecs.iou == pytest.approx(59 / 75) and ecs.dice == pytest.approx(118 / 134)
    norm = math.sqrt(2.62 ** 2 + 8)
    combined = math.sqrt(2 / 3 * (1 + 1.01 ** (-cap / norm)) / 2)
    assert s.classes["mito"].score == pytest.approx(combined)
    assert s.overall_score == pytest.approx(math.sqrt(combined * 59 / 75))

    paths = write_report(s, tmp_path / "out")
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert {"iou", "dice", "f1", "hausdorff", "score"} <= set(table[0])
    assert len([r for r in table if r["level"] == "crop"]) == 3
    overall = [r for r in table if r["class"] == "overall"]
    assert len(overall) == 1 and float(overall[0]["score"]) == pytest.approx(s.overall_score)
    assert "Overall score" in paths["md"].read_text()
    pytest.importorskip("matplotlib")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_class_and_crop_in_prediction(tmp_path):
    truth, pred = _write_pair(tmp_path)
    # ask for mito too in crop2? it has no mito truth: not scored. Drop crop1/mito from pred:
    import shutil

    shutil.rmtree(pred / "crop1" / "mito")
    shutil.rmtree(pred / "crop2")
    s = evaluate_hierarchies(truth, pred, classes=["ecs", "mito"], config=CFG)
    rows = {(r.crop, r.class_name): r.counts for r in s.crops}
    assert rows["crop1", "mito"].status == "missing" and rows["crop1", "mito"].fn == 2
    assert rows["crop2", "ecs"].status == "missing" and rows["crop2", "ecs"].fn == 27
    assert s.classes["mito"].score == 0.0
    with pytest.raises(Exception, match="no crop crop99"):
        evaluate_hierarchies(truth, pred, crops=[99], config=CFG)


def test_streamed_scoring_of_zarr_crops_equals_whole(tmp_path):
    truth, pred = _write_pair(tmp_path)
    whole = evaluate_hierarchies(truth, pred, config=CFG)
    plane = ScoringConfig(max_voxels_in_memory=GRID.shape[1] * GRID.shape[2], progress=False,
                          workdir=str(tmp_path))
    slabbed = evaluate_hierarchies(truth, pred, config=plane)
    assert [(s.crop, s.class_name, s.counts) for s in slabbed.crops] == \
        [(s.crop, s.class_name, s.counts) for s in whole.crops]
    assert [p for p in os.listdir(tmp_path) if p.startswith("cellmap-eval-")] == []  # cleaned up


def test_datasplit_truth_scored_against_its_own_copy(sample_dir, tmp_path):
    """The sample's ground truth read through datasplit.csv, copied into a submission hierarchy
    (instance IDs kept, anisotropic and translated grids), scores exactly 1 everywhere; removing
    one instance from a copy drops that crop's F1 to the hand-computed value."""
    from cellmap.submission import read_truth

    split = os.path.join(sample_dir, "datasplit.csv")
    truth = read_truth(split)
    assert set(truth) == {"crop1", "crop2", "crop3", "crop4", "crop5"}
    assert read_truth(split, usage="validate").keys() == {"crop5"}
    sub = tmp_path / "submission.zarr"
    for crop, labels in truth.items():
        for name, la in labels.items():
            write_label(sub, crop, name, np.asarray(la.array[:]), la.grid)
    s = evaluate_hierarchies(split, sub, config=CFG)
    assert s.overall_score == 1.0 and all(c.score == 1.0 for c in s.classes.values())
    mito = np.asarray(truth["crop1"]["mito"].array[:])
    ids = [i for i in np.unique(mito) if i]
    assert len(ids) >= 2
    mito[mito == ids[0]] = 0  # one object fewer: tp n-1, fn 1
    write_label(sub, "crop1", "mito", mito, truth["crop1"]["mito"].grid)
    s = evaluate_hierarchies(split, sub, classes=["mito"], crops=[1], config=CFG)
    c = s.crops[0].counts
    n = len(ids)
    assert (c.tp, c.fp, c.fn) == (n - 1, 0, 1) and c.f1 == pytest.approx(2 * (n - 1) / (2 * n - 1))


def test_prediction_off_the_crop_is_reported(tmp_path):
    truth, pred = _write_pair(tmp_path)
    far = Grid((8.0, 8.0, 8.0), (1e6, 1e6, 1e6), (3, 3, 3))
    write_label(pred, 2, "ecs", np.ones(far.shape, np.uint8), far)  # e.g. translation in voxels
    s = evaluate_hierarchies(truth, pred, config=CFG)
    rows = {(r.crop, r.class_name): r.counts for r in s.crops}
    assert (rows["crop2", "ecs"].tp, rows["crop2", "ecs"].fn) == (0, 27)
    assert any("crop2/ecs" in n and "does not overlap" in n for n in s.notes)
