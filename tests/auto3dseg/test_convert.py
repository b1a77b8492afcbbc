"""Converter end to end on synthetic CellMap stores: world-coordinate oracles for EM and labels.

Expected values come from the analytic EM field at each voxel's world centre (read back through
the NIfTI affine) and from label blocks computed by hand with numpy reshapes.
"""

import os
import sys

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_synth import (delete_raw_chunks, em_field, read_json, world_centres, write_crop,  # noqa: E402
                           write_datasplit, write_raw)

from auto3dseg.conversion import convert_datasplit  # noqa: E402
from auto3dseg.nifti import read_spacing_unit  # noqa: E402

CLASSES = ["ecs", "pm", "mito_mem", "mito_lum", "mito", "golgi_mem", "nuc", "er_mem"]
# precedence by hand from the documented rule: proper subsets first (mito_mem, mito_lum before mito),
# then thin classes (pm, *_mem) in set order, then fewer atoms, then set order
PRECEDENCE = ["pm", "mito_mem", "golgi_mem", "er_mem", "ecs", "mito_lum", "mito", "nuc"]
V = {n: i + 1 for i, n in enumerate(CLASSES)}
IGN = 255


def load_zyx(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj).transpose(2, 1, 0), img


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cellmap")
    za = str(root / "jrc_t-a" / "jrc_t-a.zarr")
    zb = str(root / "jrc_t-b" / "jrc_t-b.zarr")
    zc = str(root / "jrc_t-c" / "jrc_t-c.zarr")
    zd = str(root / "jrc_t-d" / "jrc_t-d.zarr")
    ze = str(root / "jrc_t-e" / "jrc_t-e.zarr")
    zf = str(root / "jrc_t-f" / "jrc_t-f.zarr")
    rng = np.random.default_rng(0)
    # dataset a: anisotropic raw (5.24, 4, 4) nm at origin; crop a1 on the raw s0 grid
    write_raw(za, (5.24, 4.0, 4.0), (0.0, 0.0, 0.0), (48, 64, 64))
    write_crop(za, "crop11", (5.24, 4.0, 4.0), (10 * 5.24, 48.0, 48.0),
               {"ecs": (rng.random((20, 24, 24)) < 0.5).astype(np.uint8)})
    # dataset b: isotropic 4 nm raw with translation (40, 40, 40)
    write_raw(zb, (4.0, 4.0, 4.0), (40.0, 40.0, 40.0), (40, 48, 48))
    # b1: labels 2x finer (2 nm), low corner on raw voxel corner 38 + 32 = 70 nm
    lum = np.zeros((32, 32, 32), np.uint8)
    lum[4:28, 4:28, 4:28] = 1
    mem = np.zeros_like(lum)
    mem[4:28, 4:28, 9] = 1                      # one 2 nm sheet inside the lumen at x index 9
    mito = np.zeros((32, 32, 32), np.uint16)
    mito[4:28, 4:28, 4:16] = 1
    mito[4:28, 4:28, 16:30] = 300               # instance ids > 255
    ecs = np.zeros_like(lum)
    ecs[:, :, 30:] = 1
    pm = np.zeros_like(lum)
    pm[:, :, 29] = 1
    write_crop(zb, "crop1", (2.0,) * 3, (71.0,) * 3,
               {"ecs": ecs, "pm": pm, "mito_mem": mem, "mito_lum": lum, "mito": mito,
                "golgi_mem": np.zeros_like(lum)}, kinds={"mito": "instance"})
    # b3: coarse labels on the raw s2 grid (16 nm; s2 translation 40 + 1.5 * 4 = 46), nuc with id 255
    nuc = np.zeros((3, 3, 3), np.uint16)
    nuc[1, 1, 1] = 255
    nuc[0, :, 2] = 7
    write_crop(zb, "crop3", (16.0,) * 3, (46.0 + 32,) * 3, {"nuc": nuc}, kinds={"nuc": "instance"})
    # b4: er_mem at raw resolution with declared unknown 255 (complement_counts.unknown > 0)
    er = np.zeros((4, 8, 8), np.uint8)
    er[0:2, 0:2, 0:2] = 255                     # block all unknown -> ignore
    er[0:2, 0:2, 2:4] = [[[255, 1]]]            # unknown + present -> er_mem
    er[0:2, 2:4, 0:2] = [[[255, 0]]]            # unknown + background -> ignore
    er[2:4, :, :] = 1
    write_crop(zb, "crop4", (4.0,) * 3, (40.0 + 8 * 4,) * 3, {"er_mem": er},
               unknown_counts={"er_mem": int((er == 255).sum())})
    # b5: only a class outside the set -> no annotated class
    write_crop(zb, "crop5", (4.0,) * 3, (60.0,) * 3, {"ves_mem": np.ones((16, 16, 16), np.uint8)})
    # b6: a thin crop (one 8 nm voxel in z) -> size outlier
    write_crop(zb, "crop6", (4.0,) * 3, (80.0, 60.0, 60.0), {"ecs": np.ones((2, 16, 16), np.uint8)})
    # b2: raw resolution, partly outside raw (z past the end, y before the start)
    ecs2 = (np.indices((8, 16, 16)).sum(axis=0) % 3 == 0).astype(np.uint8)
    write_crop(zb, "crop2", (4.0,) * 3, (40.0 + 36 * 4, 40.0 - 2 * 4, 40.0 + 4 * 4), {"ecs": ecs2})
    # dataset c: raw chunks missing (s0 z chunk 1 = z 8..15 deleted)
    write_raw(zc, (4.0,) * 3, (2.0,) * 3, (32, 32, 32))
    write_crop(zc, "crop21", (4.0,) * 3, (2.0 + 4 * 4, 2.0, 2.0), {"ecs": np.ones((16, 16, 16), np.uint8)})
    assert delete_raw_chunks(zc + "/recon-1/em/fibsem-uint8", "s0", [1]) > 0
    # flags: blank EM, constant EM, labels on empty EM
    write_raw(zd, (4.0,) * 3, (2.0,) * 3, (16, 16, 16), constant=0)
    write_crop(zd, "crop31", (4.0,) * 3, (2.0,) * 3, {"ecs": np.ones((16, 16, 16), np.uint8)})
    write_raw(ze, (4.0,) * 3, (2.0,) * 3, (16, 16, 16), constant=120)
    write_crop(ze, "crop41", (4.0,) * 3, (2.0,) * 3, {"ecs": np.ones((16, 16, 16), np.uint8)})
    write_raw(zf, (4.0,) * 3, (2.0,) * 3, (16, 16, 16), zero_x_below_nm=48.0)
    ecs_f = np.zeros((16, 16, 16), np.uint8)
    ecs_f[:, :, :10] = 1                        # labels sit where EM is 0 (x < 48 nm)
    write_crop(zf, "crop51", (4.0,) * 3, (2.0,) * 3, {"ecs": ecs_f})
    main = write_datasplit(root / "datasplit.csv", [
        ("train", za, "crop11", ["ecs"]),
        ("train", zb, "crop1", ["ecs", "pm", "mito_mem", "mito_lum", "mito", "golgi_mem"]),
        ("validate", zb, "crop3", ["nuc"]),
        ("train", zb, "crop4", ["er_mem"]),
        ("train", zb, "crop5", ["ves_mem"]),
        ("train", zb, "crop6", ["ecs"]),
        ("train", zd, "crop31", ["ecs"]),
        ("train", ze, "crop41", ["ecs"]),
        ("train", zf, "crop51", ["ecs"]),
    ])
    fine = write_datasplit(root / "datasplit_fine.csv", [
        ("train", zb, "crop2", ["ecs"]), ("train", zc, "crop21", ["ecs"])])
    return {"root": root, "main": main, "fine": fine, "zb": zb}


@pytest.fixture(scope="module")
def converted(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("nifti")
    rep = convert_datasplit(stores["main"], out, classes=CLASSES, progress=False)
    return out, rep, {c["key"]: c for c in rep["crops"]}


def test_encoding_precedence_and_channels(converted):
    _, rep, _ = converted
    assert rep["encoding"]["precedence"] == PRECEDENCE
    idx = {c["name"]: c["index"] for c in rep["encoding"]["class_names"]}
    assert idx["mito"] == sorted([V["mito"], V["mito_mem"], V["mito_lum"]])
    assert idx["ecs"] == [V["ecs"]]


def test_em_matches_analytic_field_through_affine_anisotropic_area(converted):
    out, _, recs = converted
    rec = recs["jrc_t-a_crop11"]
    assert rec["raw"]["level"] == "s0"          # s1 is 10.48 nm in z, coarser than 8
    data, img = load_zyx(out / rec["output"]["image"])
    assert data.dtype == np.uint8 and data.shape == (13, 12, 12)
    x, y, z = world_centres(img.shape, img.affine)
    want = em_field(z, y, x).transpose(2, 1, 0)
    np.testing.assert_allclose(data.astype(float), want, atol=1.01)
    zooms, unit = read_spacing_unit(out / rec["output"]["image"])
    assert np.allclose(zooms, (8, 8, 8)) and unit == "nm"
    # the affine origin is the world centre of voxel 0 = label corner + 4 nm
    assert np.allclose(img.affine[:3, 3], [48 - 2 + 4, 48 - 2 + 4, 10 * 5.24 - 2.62 + 4])


def _blocks_any(mask, f):
    z, y, x = (s // f for s in mask.shape)
    return mask.reshape(z, f, y, f, x, f).any(axis=(1, 3, 5))


def test_labels_2x_finer_keep_thin_membranes_and_precedence(converted, stores):
    out, _, recs = converted
    rec = recs["jrc_t-b_crop1"]
    lab, _ = load_zyx(out / rec["output"]["label"])
    em, _ = load_zyx(out / rec["output"]["image"])
    assert lab.shape == (8, 8, 8)
    # hand oracle: 4x4x4 blocks of the 2 nm arrays, highest precedence present wins
    from cellmap import _zarr
    base = stores["zb"] + "/recon-1/labels/groundtruth/crop1"
    src = {n: np.asarray(_zarr.open_array(f"{base}/{n}/s0")[...]) > 0
           for n in ("ecs", "pm", "mito_mem", "mito_lum", "mito", "golgi_mem")}
    want = np.zeros((8, 8, 8), np.uint8)
    for name in reversed(PRECEDENCE):
        if name in src:
            want[_blocks_any(src[name], 4)] = V[name]
    np.testing.assert_array_equal(lab, want)
    assert (lab == V["mito_mem"]).sum() == 6 * 6       # the 2 nm sheet survives at 8 nm
    assert (lab == V["pm"]).sum() == 64                  # pm beats ecs where they share a block
    # EM at 8 nm from raw s1 (identity grid) still follows the field
    x, y, z = world_centres(lab.shape[::-1], nib.load(str(out / rec["output"]["image"])).affine)
    np.testing.assert_allclose(em.astype(float), em_field(z, y, x).transpose(2, 1, 0), atol=1.01)
    st = rec["classes"]
    assert st["golgi_mem"]["status"] == "absent" and st["nuc"]["status"] == "unknown"
    union = _blocks_any(src["mito"] | src["mito_mem"] | src["mito_lum"], 4)
    in_mito = np.isin(lab, [V["mito"], V["mito_mem"], V["mito_lum"]])
    assert st["mito"]["output_voxels"] == int(in_mito.sum())
    # mito blocks at x block 7 (x 28..31 at 2 nm) hold pm, which wins: 6 x 6 blocks lost, counted
    assert st["mito"]["overlap_lost_voxels"] == int((union & ~in_mito).sum()) == 36
    assert st["mito_lum"]["overlap_lost_voxels"] > 0   # lumen blocks taken by the membrane sheet


def test_coarser_labels_upsampled_and_255_is_an_instance_id_when_not_declared(converted):
    out, _, recs = converted
    rec = recs["jrc_t-b_crop3"]
    lab, _ = load_zyx(out / rec["output"]["label"])
    nuc = np.zeros((3, 3, 3), np.uint16)
    nuc[1, 1, 1] = 255
    nuc[0, :, 2] = 7
    want = np.repeat(np.repeat(np.repeat(np.where(nuc > 0, V["nuc"], 0), 2, 0), 2, 1), 2, 2)
    np.testing.assert_array_equal(lab, want)


def test_declared_unknown_becomes_ignore_unless_a_class_is_present(converted):
    out, _, recs = converted
    lab, _ = load_zyx(out / recs["jrc_t-b_crop4"]["output"]["label"])
    assert lab.shape == (2, 4, 4)
    assert lab[0, 0, 0] == IGN                  # all unknown
    assert lab[0, 0, 1] == V["er_mem"]          # unknown + present
    assert lab[0, 1, 0] == IGN                  # unknown + background
    assert lab[0, 1, 1] == 0
    assert np.all(lab[1] == V["er_mem"])


def test_flags_and_verdicts(converted):
    _, rep, recs = converted
    codes = {k: {f["code"] for f in r["flags"]} for k, r in recs.items()}
    assert codes["jrc_t-d_crop31"] >= {"blank_em"}
    assert codes["jrc_t-e_crop41"] == {"constant_em"}
    assert codes["jrc_t-f_crop51"] == {"labels_on_empty_em"}
    assert codes["jrc_t-b_crop5"] == {"no_annotated_class"}
    assert codes["jrc_t-b_crop6"] == {"size_outlier"}
    assert codes["jrc_t-b_crop4"] == {"size_outlier", "constant_em"}   # 2 x 4 x 4 voxels, 8 nm of field
    for k in ("jrc_t-a_crop11", "jrc_t-b_crop1", "jrc_t-b_crop3"):
        assert codes[k] == set() and recs[k]["verdict"] == "kept", (k, recs[k]["flags"])
    for k in ("jrc_t-d_crop31", "jrc_t-e_crop41", "jrc_t-f_crop51", "jrc_t-b_crop5", "jrc_t-b_crop6"):
        assert recs[k]["verdict"].startswith("excluded")
    md = open(rep["report_paths"]["md"]).read()
    assert "jrc_t-f_crop51" in md and "labels_on_empty_em" in md and "pictures/jrc_t-b_crop1.png" in md
    for k in recs:
        assert os.path.exists(os.path.join(rep["output_dir"], recs[k]["picture"]))


def test_report_records_source_grids_for_export(converted):
    _, _, recs = converted
    g = recs["jrc_t-b_crop1"]["source_label_grid"]
    assert g == {"axes": "zyx", "unit": "nm", "voxel_size_nm": [2.0, 2.0, 2.0],
                 "translation_nm": [71.0, 71.0, 71.0], "shape": [32, 32, 32]}
    assert recs["jrc_t-b_crop1"]["output"]["shape"] == [8, 8, 8]


def test_datalist_survives_monai_datafold_read(converted):
    from monai.auto3dseg.utils import datafold_read

    out, rep, recs = converted
    dl = read_json(out / "datalist.json")
    assert dl["ignore_value"] == 255 and dl["sigmoid"] is True
    names = [c["name"] for c in dl["class_names"]]
    assert names == CLASSES
    kept = sorted(k for k, r in recs.items() if r["verdict"] == "kept")
    assert sorted(os.path.basename(t["label"])[:-7] for t in dl["training"]) == kept
    folds = {t["fold"] for t in dl["training"]}
    assert folds == {0, 1}                      # grouped by dataset: jrc_t-a and jrc_t-b
    by_ds = {}
    for t in dl["training"]:
        by_ds.setdefault(os.path.basename(t["image"]).split("_crop")[0], set()).add(t["fold"])
    assert all(len(f) == 1 for f in by_ds.values())
    seen = 0
    for fold in (0, 1):
        train, val = datafold_read(str(out / "datalist.json"), basedir=str(out), fold=fold)
        assert val and train
        for item in train + val:
            assert set(item) == {"image", "label", "fold", "annotated"}
            assert os.path.exists(item["image"]) and os.path.exists(item["label"])
            assert isinstance(item["annotated"], int) and isinstance(item["fold"], int)
            key = os.path.basename(item["label"])[:-7]
            ann = {n for n, s in recs[key]["classes"].items() if s["status"] in ("annotated", "absent")}
            assert item["annotated"] == sum(1 << i for i, n in enumerate(CLASSES) if n in ann)
            seen += 1
    assert seen == 2 * len(kept)
    b1 = next(t for t in dl["training"] if "crop1." in t["label"])
    assert b1["annotated"] == sum(1 << (V[n] - 1) for n in ("ecs", "pm", "mito_mem", "mito_lum", "mito", "golgi_mem"))


def test_partly_outside_and_missing_raw_at_raw_resolution(stores, tmp_path):
    rep = convert_datasplit(stores["fine"], tmp_path, target_spacing=(4, 4, 4), classes=["ecs"], fold_by="crop",
                            progress=False, keep_flagged=True)
    recs = {c["key"]: c for c in rep["crops"]}
    # crop2: raw z has 40 voxels, crop covers raw z 36..43 and y -2..13
    rec = recs["jrc_t-b_crop2"]
    lab, img = load_zyx(tmp_path / rec["output"]["label"])
    em, _ = load_zyx(tmp_path / rec["output"]["image"])
    ecs2 = (np.indices((8, 16, 16)).sum(axis=0) % 3 == 0).astype(np.uint8)
    outside = np.zeros((8, 16, 16), bool)
    outside[4:] = True
    outside[:, :2] = True
    np.testing.assert_array_equal(lab[outside], IGN)
    np.testing.assert_array_equal(em[outside], 0)
    np.testing.assert_array_equal(lab[~outside], ecs2[~outside])
    x, y, z = world_centres(img.shape, img.affine)
    want = em_field(z, y, x).transpose(2, 1, 0)
    np.testing.assert_allclose(em[~outside].astype(float), want[~outside], atol=0.51)
    assert abs(rec["stats"]["outside_raw_fraction"] - outside.mean()) < 1e-6
    # crop21: raw z 4..19, chunk z 8..15 missing
    rec = recs["jrc_t-c_crop21"]
    lab, _ = load_zyx(tmp_path / rec["output"]["label"])
    assert np.all(lab[4:12] == IGN) and np.all(lab[:4] == 1) and np.all(lab[12:] == 1)
    flag = next(f for f in rec["flags"] if f["code"] == "raw_missing")
    assert 'csc fetch-data --crops "21" --fetch-all-em-resolutions' in flag["fix"]
    assert rec["raw_missing_chunk_fraction"] == pytest.approx(0.5)
    assert rec["verdict"] == "kept"             # --keep_flagged
    md = open(rep["report_paths"]["md"]).read()
    assert 'csc fetch-data --crops "21" --fetch-all-em-resolutions' in md


def test_missing_raw_is_excluded_by_default_and_dry_run_writes_only_the_report(stores, tmp_path):
    rep = convert_datasplit(stores["fine"], tmp_path, target_spacing=4, classes="ecs", fold_by="crop",
                            dry_run=True, progress=False)
    recs = {c["key"]: c for c in rep["crops"]}
    assert recs["jrc_t-c_crop21"]["verdict"] == "excluded: raw_missing"
    assert sorted(os.listdir(tmp_path)) == ["conversion_report.json", "conversion_report.md", "pictures"]


def test_rerun_skips_unchanged_crops_and_force_reconverts(stores, tmp_path):
    kw = dict(target_spacing=4, classes=["ecs"], fold_by="crop", progress=False, keep_flagged=True)
    convert_datasplit(stores["fine"], tmp_path, **kw)
    img = tmp_path / "images" / "jrc_t-b_crop2_0000.nii.gz"
    m0 = img.stat().st_mtime_ns
    rep = convert_datasplit(stores["fine"], tmp_path, **kw)
    assert rep["summary"]["skipped_unchanged"] == 2 and img.stat().st_mtime_ns == m0
    assert rep["crops"][0]["stats"]["n_voxels"] == 8 * 16 * 16   # full record kept from provenance
    rep = convert_datasplit(stores["fine"], tmp_path, **dict(kw, target_spacing=8))
    assert rep["summary"]["skipped_unchanged"] == 0               # other parameters: reconverted
    rep = convert_datasplit(stores["fine"], tmp_path, **dict(kw, target_spacing=8, force=True))
    assert rep["summary"]["skipped_unchanged"] == 0


def test_parallel_slab_tasks_equal_sequential(stores, tmp_path):
    kw = dict(classes=CLASSES, progress=False, keep_flagged=True, crops=["crop11", 1], slab_voxels=64)
    seq = convert_datasplit(stores["main"], tmp_path / "seq", **kw)
    par = convert_datasplit(stores["main"], tmp_path / "par", workers=2, **kw)
    for rs, rp in zip(seq["crops"], par["crops"]):
        assert rs["stats"] == rp["stats"]
        for f in ("image", "label"):
            a, _ = load_zyx(tmp_path / "seq" / rs["output"][f])
            b, _ = load_zyx(tmp_path / "par" / rp["output"][f])
            np.testing.assert_array_equal(a, b)
    assert len(seq["crops"]) == 2


def test_test_rows_become_image_only_testing_items(stores, tmp_path):
    split = write_datasplit(tmp_path / "ds.csv", [
        ("train", stores["zb"], "crop1", ["ecs", "pm"]), ("validate", stores["zb"], "crop3", ["nuc"]),
        ("test", stores["zb"], "crop6", ["ecs"])])
    rep = convert_datasplit(split, tmp_path / "o", classes=["ecs", "pm", "nuc"], fold_by="crop", progress=False,
                            keep_flagged=True)
    dl = read_json(tmp_path / "o" / "datalist.json")
    assert dl["testing"] == [{"image": "images/jrc_t-b_crop6_0000.nii.gz"}]
    assert all("crop6" not in t["image"] for t in dl["training"]) and len(dl["training"]) == 2
    assert (tmp_path / "o" / "images" / "jrc_t-b_crop6_0000.nii.gz").exists()
    assert not (tmp_path / "o" / "labels" / "jrc_t-b_crop6.nii.gz").exists()
    rec = next(c for c in rep["crops"] if c["key"] == "jrc_t-b_crop6")
    assert rec["output"]["label"] is None


def test_dask_executor_runs_slab_tasks(stores, tmp_path):
    """The path --cluster slurm takes (a dask distributed Client), here on an in-process LocalCluster."""
    distributed = pytest.importorskip("distributed")
    kw = dict(classes=CLASSES, progress=False, keep_flagged=True, crops=[1], slab_voxels=64, fold_by="crop")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        with pytest.raises(Exception, match="at least two groups"):   # one crop: no validation fold
            convert_datasplit(stores["main"], tmp_path / "dask", executor=client, **kw)
    seq = convert_datasplit(stores["main"], tmp_path / "seq", dry_run=True, **kw)
    lab_d, _ = load_zyx(tmp_path / "dask" / "labels" / "jrc_t-b_crop1.nii.gz")
    rec = next(c for c in seq["crops"] if c["key"] == "jrc_t-b_crop1")
    assert lab_d.shape == (8, 8, 8) and int((lab_d == V["mito_mem"]).sum()) == 36
    assert {int(k): v for k, v in rec["stats"]["value_counts"].items()} == \
        {int(v): int(c) for v, c in zip(*np.unique(lab_d, return_counts=True))}


def test_em_linear_upsampling_from_an_explicit_coarser_level(stores, tmp_path):
    """--scale s1 on jrc_t-a: z 10.48 nm -> 8 nm is linear interpolation, y/x 8 -> 8 nm identity."""
    rep = convert_datasplit(stores["main"], tmp_path, scale="s1", classes=["ecs"], crops=["crop11", "crop1"],
                            progress=False, keep_flagged=True)
    rec = next(c for c in rep["crops"] if c["key"] == "jrc_t-a_crop11")
    assert rec["raw"]["level"] == "s1" and rec["raw"]["voxel_size_nm"] == [10.48, 8.0, 8.0]
    data, img = load_zyx(tmp_path / rec["output"]["image"])
    x, y, z = world_centres(img.shape, img.affine)
    np.testing.assert_allclose(data.astype(float), em_field(z, y, x).transpose(2, 1, 0), atol=1.01)
