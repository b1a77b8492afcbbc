"""Prediction export: NIfTI on the converter's grid -> submission.zarr on each crop's own world grid."""

import csv
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest

from auto3dseg.export import (
    ExportError,
    case_key,
    class_masks,
    export_case,
    export_predictions,
    load_targets,
    read_nifti,
)
from auto3dseg.nifti import nifti_affine
from cellmap.grid import Grid
from cellmap.submission import read_hierarchy

# CellMap-like crop grid: anisotropic z (2.62 nm), translation with the 0.5-voxel fraction
CROP = Grid((2.62, 2.0, 2.0), (3132.21, 899.0, 25863.0), (6, 10, 12))
CLASSES = [{"name": "ecs", "index": [1]}, {"name": "mito", "index": [2]},
           {"name": "er_mem", "index": [3]}]
INSTANCE = ("mito",)


def save_nifti(path, zyx, grid):
    """Write (z, y, x) or (c, z, y, x) data as NIfTI (x, y, z[, c]) with the converter's affine."""
    data = np.transpose(zyx, (3, 2, 1, 0)) if zyx.ndim == 4 else np.transpose(zyx, (2, 1, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), nifti_affine(grid.voxel_size_nm,
                                                                       grid.translation_nm)), str(path))
    return path


def label_map(shape):
    lab = np.zeros(shape, np.uint8)
    lab[0:2, 0:4, 0:6] = 1          # ecs
    lab[2:4, 2:4, 2:4] = 2          # mito object A
    lab[4:6, 6:10, 8:12] = 2        # mito object B (not touching A)
    lab[0:6, 8:10, 0:2] = 3         # er_mem
    return lab


def test_case_key():
    assert case_key("x/jrc_a_crop7_0000_ensemble.nii.gz") == "jrc_a_crop7"
    assert case_key("jrc_a_crop7.nii.gz") == "jrc_a_crop7"
    assert case_key("jrc_a_crop7_0000.nii") == "jrc_a_crop7"


def test_read_nifti_axes_and_grid(tmp_path):
    lab = label_map(CROP.shape)
    data, grid = read_nifti(save_nifti(tmp_path / "a.nii.gz", lab, CROP))
    # NIfTI keeps the affine in float32: equal to ~1e-7 relative
    assert grid.shape == CROP.shape
    assert grid.voxel_size_nm == pytest.approx(CROP.voxel_size_nm, rel=1e-6)
    assert grid.translation_nm == pytest.approx(CROP.translation_nm, rel=1e-6)
    np.testing.assert_array_equal(data, lab)


def test_round_trip_same_grid_lands_on_crop_grid(tmp_path):
    lab = label_map(CROP.shape)
    f = save_nifti(tmp_path / "pred" / "jrc_a_crop7.nii.gz", lab, CROP)
    from auto3dseg.export import CropTarget

    export_case(f, CropTarget("jrc_a_crop7", "crop7", CROP), CLASSES, tmp_path / "s.zarr",
                instance_classes=INSTANCE)
    h = read_hierarchy(tmp_path / "s.zarr")
    assert set(h["crop7"]) == {"ecs", "mito", "er_mem"}
    for name, value in (("ecs", 1), ("er_mem", 3)):
        la = h["crop7"][name]
        assert la.grid == CROP  # same world grid: voxel size, translation, shape
        np.testing.assert_array_equal(np.asarray(la.array[:]), (lab == value).astype(np.uint8))
    mito = np.asarray(h["crop7"]["mito"].array[:])
    np.testing.assert_array_equal(mito > 0, lab == 2)
    # two separate objects -> two instance IDs, one per object
    assert set(np.unique(mito[2:4, 2:4, 2:4])) == {1} and set(np.unique(mito[4:6, 6:10, 8:12])) == {2}


def test_coarse_prediction_resampled_to_crop_grid(tmp_path):
    # the model ran at twice the crop's voxel size over the same box; 4-D sigmoid probabilities
    coarse = CROP.resampled((5.24, 4.0, 4.0))
    assert coarse.shape == (3, 5, 6)
    lab_c = np.zeros(coarse.shape, np.uint8)
    lab_c[0, 0:2, 0:3] = 1
    lab_c[2, 3:5, 4:6] = 2
    prob = np.stack([(lab_c == k + 1) * 0.9 + 0.05 for k in range(3)]).astype(np.float32)
    save_nifti(tmp_path / "p" / "jrc_a_crop7_0000_ensemble.nii.gz", prob, coarse)
    report = {"crops": [{"key": "jrc_a_crop7", "dataset": "jrc_a", "crop": "crop7",
                         "source_label_grid": {"axes": "zyx", "unit": "nm",
                                               "voxel_size_nm": list(CROP.voxel_size_nm),
                                               "translation_nm": list(CROP.translation_nm),
                                               "shape": list(CROP.shape)}}]}
    (tmp_path / "conversion_report.json").write_text(json.dumps(report))
    save_nifti(tmp_path / "p" / "jrc_b_crop9.nii.gz", prob, coarse)  # no grid known -> skipped
    res = export_predictions(tmp_path / "p", tmp_path / "conversion_report.json", CLASSES,
                             tmp_path / "submission.zarr", instance_classes=INSTANCE)
    assert res["skipped"] == [str(tmp_path / "p" / "jrc_b_crop9.nii.gz")]
    h = read_hierarchy(tmp_path / "submission.zarr")
    assert list(h) == ["crop7"]
    # known transform: each coarse voxel becomes a 2x2x2 block of the crop grid
    up = lab_c.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    ecs = h["crop7"]["ecs"]
    assert ecs.grid == CROP
    np.testing.assert_array_equal(np.asarray(ecs.array[:]), (up == 1).astype(np.uint8))
    np.testing.assert_array_equal(np.asarray(h["crop7"]["mito"].array[:]), (up == 2).astype(np.uint8))
    assert not np.asarray(h["crop7"]["er_mem"].array[:]).any()
    names = zipfile.ZipFile(res["zip"]).namelist()
    assert "crop7/ecs/.zarray" in names and ".zgroup" in names


def test_manifest_targets_limit_classes(tmp_path):
    m = tmp_path / "test_crop_manifest.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["crop_name", "dataset", "class_label", "voxel_size", "translation", "shape"])
        for c in ("ecs", "mito"):
            w.writerow([7, "jrc_a", c, "[2.62;2.0;2.0]", "[3132.21;899.0;25863.0]", "[6;10;12]"])
    t = load_targets(m)
    assert t["jrc_a_crop7"].grid == CROP and t["jrc_a_crop7"].classes == ("ecs", "mito")
    save_nifti(tmp_path / "p" / "jrc_a_crop7.nii.gz", label_map(CROP.shape), CROP)
    export_predictions(tmp_path / "p", t, CLASSES, tmp_path / "s.zarr", make_zip=False)
    assert set(read_hierarchy(tmp_path / "s.zarr")["crop7"]) == {"ecs", "mito"}


def test_class_masks_and_errors(tmp_path):
    lab = np.array([[[0, 1, 2, 3, 255]]], np.uint8)
    groups = [{"name": "mito_mem", "index": [1]}, {"name": "mito", "index": [1, 2]}]
    m = dict(class_masks(lab, groups))
    assert m["mito_mem"].tolist() == [[[False, True, False, False, False]]]
    assert m["mito"].tolist() == [[[False, True, True, False, False]]]  # a group holds its members
    with pytest.raises(ExportError, match="2 channels but 3 classes"):
        dict(class_masks(np.zeros((2, 1, 1, 1), np.uint8), CLASSES))
    far = Grid((8, 8, 8), (1e6, 1e6, 1e6), (2, 2, 2))
    f = save_nifti(tmp_path / "jrc_a_crop7.nii.gz", np.zeros((2, 2, 2), np.uint8), far)
    from auto3dseg.export import CropTarget

    with pytest.raises(ExportError, match="does not overlap"):
        export_case(f, CropTarget("jrc_a_crop7", "crop7", CROP), CLASSES, tmp_path / "s.zarr")
    with pytest.raises(ExportError, match="conversion_report.json, test_crop_manifest.csv"):
        load_targets(tmp_path / "grids.txt")


def test_datasplit_targets_and_export_for_run(tmp_path):
    from auto3dseg.export import export_for_run
    from cellmap.submission import write_label

    gt = tmp_path / "jrc_a" / "jrc_a.zarr" / "recon-1" / "labels" / "groundtruth"
    write_label(gt, 7, "ecs", np.zeros(CROP.shape, np.uint8), CROP)
    split = tmp_path / "datasplit.csv"
    split.write_text('"validate","jrc_a/jrc_a.zarr","recon-1/em/fibsem-uint8","jrc_a/jrc_a.zarr",'
                     '"recon-1/labels/groundtruth/crop7/[ecs,mito]"\n')
    t = load_targets(split)
    assert list(t) == ["jrc_a_crop7"] and t["jrc_a_crop7"].grid == CROP
    assert t["jrc_a_crop7"].classes == ("ecs", "mito")
    # predict-time export: nothing without a grid source, a submission with one
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    (nifti / "datalist.json").write_text(json.dumps({"class_names": CLASSES}))
    preds = tmp_path / "preds"
    save_nifti(preds / "jrc_a_crop7.nii.gz", label_map(CROP.shape), CROP)
    assert export_for_run(preds, nifti / "datalist.json") is None  # no grids known yet
    res = export_for_run(preds, nifti / "datalist.json", grids=split)
    assert res["zarr"] == str(preds / "submission.zarr") and res["zip"].endswith("submission.zip")
    assert set(read_hierarchy(preds / "submission.zarr")["crop7"]) == {"ecs", "mito"}
