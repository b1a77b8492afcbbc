"""auto3dseg.datacheck: every flag from hand-made slab statistics."""

import numpy as np

from auto3dseg.datacheck import CheckThresholds, CropStats, check_crop, fetch_command, size_outliers


def stats(em, labels=None, outside=None, missing=None):
    outside = np.zeros(em.shape, bool) if outside is None else outside
    missing = np.zeros(em.shape, bool) if missing is None else missing
    return CropStats.of_slab(em, ~(outside | missing), labels, outside, missing, 255)


def codes(flags):
    return {f.code for f in flags}


RNG = np.random.default_rng(0)
GOOD = RNG.integers(90, 170, (8, 8, 8), dtype=np.uint8)


def test_statistics_by_hand():
    em = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    lab = np.array([0, 1, 1, 255, 0, 2, 0, 0], np.uint8).reshape(2, 2, 2)
    s = stats(em, lab)
    assert s.em_valid == 8 and s.em_sum == 28 and s.em_min == 0 and s.em_max == 7 and s.em_zero == 1
    assert s.value_counts == {0: 4, 1: 2, 2: 1, 255: 1} and s.labelled == 3 and s.labelled_em_zero == 0
    m = s.merge(s)
    assert m.n_voxels == 16 and m.value_counts[1] == 4 and abs(m.em_mean - 3.5) < 1e-12


def test_clean_crop_has_no_flag():
    assert check_crop("ds/crop1", "crop1", stats(GOOD, np.ones_like(GOOD)), ["ecs"], 0.0) == []


def test_blank_constant_and_labels_on_empty_em():
    assert codes(check_crop("d/c", "crop1", stats(np.zeros_like(GOOD)), ["ecs"], 0.0)) == {"blank_em"}
    assert codes(check_crop("d/c", "crop1", stats(np.full_like(GOOD, 120)), ["ecs"], 0.0)) == {"constant_em"}
    em = GOOD.copy()
    em[:, :, :6] = 0
    lab = np.zeros_like(em)
    lab[:, :, :5] = 1
    assert codes(check_crop("d/c", "crop1", stats(em, lab), ["ecs"], 0.0)) == {"labels_on_empty_em"}


def test_missing_raw_names_the_fetch_command():
    miss = np.zeros(GOOD.shape, bool)
    miss[:2] = True
    f = check_crop("jrc_x/crop7", "crop7", stats(GOOD, missing=miss), ["ecs"], 0.25)
    assert codes(f) == {"raw_missing"}
    assert 'csc fetch-data --crops "7" --fetch-all-em-resolutions' in f[0].fix and "25.0%" in f[0].message
    assert fetch_command(["crop3", "crop12"]) == 'csc fetch-data --crops "3,12" --fetch-all-em-resolutions'


def test_outside_and_no_annotation():
    out = np.zeros(GOOD.shape, bool)
    out[:6] = True
    assert codes(check_crop("d/c", "crop1", stats(GOOD, outside=out), ["ecs"], 0.0)) == {"mostly_outside_raw"}
    assert codes(check_crop("d/c", "crop1", stats(GOOD), [], 0.0)) == {"no_annotated_class"}
    assert check_crop("d/c", "crop1", stats(GOOD), [], 0.0, has_labels=False) == []


def test_size_outliers():
    shapes = {"a": (10, 10, 10), "b": (10, 10, 12), "c": (10, 10, 9), "big": (50, 50, 50), "thin": (2, 40, 40)}
    out = size_outliers(shapes, CheckThresholds())
    assert set(out) == {"big", "thin"} and "125.0x" not in out["big"].message and "median" in out["big"].message
    assert size_outliers({"a": (10, 10, 10), "b": (100, 100, 100)}) == {}   # < 3 crops: no median test
