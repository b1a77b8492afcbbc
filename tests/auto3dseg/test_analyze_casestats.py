"""Our streamed per-case statistics equal MONAI DataAnalyzer's (the reference), and bad cases fail by name."""

import json
import os

import numpy as np
import pytest

from auto3dseg.analyze import AnalysisError, analyze
from auto3dseg.casestats import CaseStatsError, case_stats, stats_from_histogram
from synth_nifti import make_case, write_nifti


def _assert_same(ref, ours, path=""):
    """Same keys/order/lengths; numbers equal up to DataAnalyzer's float32 arithmetic.

    Below 1M voxels DataAnalyzer uses torch.quantile in float32, whose interpolation position (n-1)*q carries
    float32 error: up to ~1e-3 grey levels between two distant order statistics. Hence abs=5e-3.
    """
    if isinstance(ref, dict):
        assert list(ref) == list(ours), path
        for k in ref:
            _assert_same(ref[k], ours[k], f"{path}/{k}")
    elif isinstance(ref, list):
        assert len(ref) == len(ours), path
        for i, (a, b) in enumerate(zip(ref, ours)):
            _assert_same(a, b, f"{path}[{i}]")
    elif isinstance(ref, float) or isinstance(ours, float):
        assert ours == pytest.approx(ref, rel=2e-5, abs=5e-3), path
    else:
        assert ref == ours, path


@pytest.fixture(scope="module")
def odd_cases(tmp_path_factory):
    """Cases that exercise the definitions: flipped and permuted affines, zero borders, an ignore slab,
    uint16 and float32 images."""
    root = str(tmp_path_factory.mktemp("odd"))
    rng = np.random.default_rng(3)
    flip = np.diag([-8.0, 8.0, 6.0, 1.0])
    perm = np.array([[0, 8.0, 0, 0], [0, 0, 4.0, 0], [8.0, 0, 0, 0], [0, 0, 0, 1]])  # array axes are y, z, x
    specs = [
        ("plain", (20, 26, 18), None, dict(ignore_slab=True)),
        ("flip", (22, 18, 20), flip, dict(zero_border=4)),
        ("perm", (18, 20, 24), perm, dict(zero_border=3)),
    ]
    items = []
    for name, shape, aff, kw in specs + [("u16", (16, 18, 20), None, {}), ("f32", (16, 16, 18), None, {})]:
        img, lab = make_case(rng, shape, **kw)
        img[:2] = 0  # zero first planes of axis 0 (never cropped by DataAnalyzer when it is RAS axis 0)
        if name == "u16":  # uint16 image and label: the streamed path without the 256x256 joint histogram
            img, lab = img.astype(np.uint16) * 4, lab.astype(np.uint16)
        if name == "f32":  # float image: the exact in-memory fallback
            img = img.astype(np.float32) / 7.0
        items.append(
            {
                "image": write_nifti(os.path.join(root, f"{name}_0000.nii.gz"), img, affine=aff),
                "label": write_nifti(os.path.join(root, f"{name}.nii.gz"), lab, affine=aff),
                "fold": 0,
            }
        )
    path = os.path.join(root, "datalist.json")
    with open(path, "w") as fh:
        json.dump({"training": items}, fh)
    return path


def test_per_case_numbers_equal_dataanalyzer(odd_cases, tmp_path):
    ref = analyze(odd_cases, str(tmp_path / "monai"), engine="monai", report=False, progress=False)
    ours = analyze(odd_cases, str(tmp_path / "ours"), engine="ours", slab_voxels=3000, report=False, progress=False)
    import yaml

    ref_cases = yaml.safe_load(open(ref["datastats_by_case"]))
    our_cases = yaml.safe_load(open(ours["datastats_by_case"]))
    assert len(our_cases["stats_by_cases"]) == 5
    by_path = {c["image_filepath"]: c for c in ref_cases["stats_by_cases"]}
    for c in our_cases["stats_by_cases"]:
        _assert_same(by_path[c["image_filepath"]], c)
    _assert_same(ref_cases["stats_summary"], our_cases["stats_summary"])


def test_histogram_stats_match_numpy_definitions():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 12345):
        v = rng.integers(0, 256, n)
        s = stats_from_histogram(np.bincount(v, minlength=256))
        srt = np.sort(v)
        assert s["median"] == srt[(n - 1) // 2]  # torch.median: lower median
        assert s["mean"] == pytest.approx(v.mean())
        assert s["stdev"] == pytest.approx(v.std())
        assert (s["min"], s["max"]) == (v.min(), v.max())
        assert s["percentile"] == pytest.approx(list(np.percentile(v, [0.5, 10, 90, 99.5])))
    empty = stats_from_histogram(np.zeros(256, int))
    assert empty["mean"] == 0.0 and empty["percentile"] == [0.0] * 4  # DataAnalyzer's stats of [0.0]


def test_all_zero_image_fails_naming_the_case(tmp_path):
    rng = np.random.default_rng(1)
    items = []
    for name, zero in (("good", False), ("blank", True)):
        img, lab = make_case(rng, (16, 16, 16))
        if zero:
            img[:] = 0
        items.append(
            {
                "image": write_nifti(str(tmp_path / f"{name}_0000.nii.gz"), img),
                "label": write_nifti(str(tmp_path / f"{name}.nii.gz"), lab),
            }
        )
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"training": items}))
    for engine in ("ours", "monai"):
        with pytest.raises(AnalysisError, match="blank_0000.nii.gz") as err:
            analyze(str(dl), str(tmp_path / engine), engine=engine, report=False, progress=False)
        assert "good_0000" not in str(err.value)


def test_label_on_another_grid_is_rejected(tmp_path):
    rng = np.random.default_rng(2)
    img, lab = make_case(rng, (16, 16, 16))
    image = write_nifti(str(tmp_path / "a_0000.nii.gz"), img)
    label = write_nifti(str(tmp_path / "a.nii.gz"), lab[:, :, :12])
    with pytest.raises(CaseStatsError, match="a.nii.gz.*differs from image shape"):
        case_stats(image, label)
