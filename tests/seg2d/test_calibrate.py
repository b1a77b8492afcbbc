"""GT calibration recovers known flips/rotations and shifts exactly."""

import json
import subprocess
import sys

import numpy as np
import pytest

from seg2d_synth import make_frame, write_dataset
from seg2d.calibrate import calibrate_frames
from seg2d.dihedral import TRANSFORMS, apply_calibration
from seg2d.errors import CalibrationError

# Independent inverse of each named transform (undo np.roll, then the flip, then the rotation), written
# without seg2d.dihedral: exported = inverse(gt) must satisfy apply_calibration(exported, name, shift) == gt.
_UNDO_FLIP = {None: lambda a: a, "ud": np.flipud, "lr": np.fliplr}


def _misalign(gt, name, shift):
    k, flip = TRANSFORMS[name]
    undone = _UNDO_FLIP[flip](np.roll(gt, (-shift[0], -shift[1]), axis=(0, 1)))
    return np.rot90(undone, -k)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_known_transform_and_shift_recovered_exactly(name):
    gts = [make_frame(s)[1] for s in range(3)]
    shift = (3, -5)
    exported = [_misalign(g, name, shift) for g in gts]
    cal = calibrate_frames(["a", "b", "c"], exported, gts)  # baselines = the true, aligned masks
    assert cal.transform == name
    assert cal.shift == [3, -5]
    for e, g in zip(exported, gts):
        assert np.array_equal(apply_calibration(e, cal.transform, cal.shift), g)


def test_named_transforms_match_numpy_definitions():
    a = np.arange(12).reshape(3, 4)
    assert np.array_equal(apply_calibration(a, "rot90_flipud", (0, 0)), a.T)            # rot90 then flipud = transpose
    assert np.array_equal(apply_calibration(a, "rot90_fliplr", (0, 0)), a[::-1, ::-1].T)  # anti-transpose
    assert np.array_equal(apply_calibration(a, "rot270", (1, 0)), np.roll(np.rot90(a, 3), 1, axis=0))


def test_non_square_frames_only_try_shape_compatible_rotations():
    image, gt = make_frame(5, shape=(48, 80))
    exported = _misalign(gt, "rot270", (2, 4))
    assert exported.shape == (80, 48)
    cal = calibrate_frames(["f"], [exported], [gt])
    assert (cal.transform, cal.shift) == ("rot270", [2, 4])
    assert set(cal.frames[0]) >= {"name", "transform", "shift", "dice"}


def test_shift_is_clamped():
    gt = make_frame(1)[1]
    cal = calibrate_frames(["f"], [np.roll(gt, (-9, 0), axis=(0, 1))], [gt], max_shift_px=4, min_dice=0.0)
    assert cal.shift == [4, 0]


def test_vote_and_median_shift_across_frames_and_per_frame():
    gts = [make_frame(s)[1] for s in range(5)]
    shifts = [(2, 1), (3, 1), (3, 2), (4, 1), (0, 0)]
    names = ["fliplr"] * 4 + ["rot180"]
    exported = [_misalign(g, n, s) for g, n, s in zip(gts, names, shifts)]
    cal = calibrate_frames([f"f{i}" for i in range(5)], exported, gts, calibration_frames=5)
    assert cal.transform == "fliplr" and cal.votes == {"fliplr": 4, "rot180": 1}
    assert cal.shift == [3, 1]  # median of the fliplr frames' shifts: y (2,3,3,4) -> 3, x (1,1,2,1) -> 1
    per = calibrate_frames([f"f{i}" for i in range(5)], exported, gts, per_frame=True)
    for i, (n, s) in enumerate(zip(names, shifts)):
        assert per.for_frame(f"f{i}") == (n, list(s))
        assert np.array_equal(per.apply(f"f{i}", exported[i]), gts[i])


def test_empty_baseline_is_a_clear_error():
    gt = make_frame(0)[1]
    with pytest.raises(CalibrationError, match="baseline_masks"):
        calibrate_frames(["f"], [gt], [np.zeros_like(gt)])


def test_cli_calibrate_with_baseline_masks(tmp_path):
    frames = [make_frame(s, shape=(48, 64)) for s in range(3)]
    ds = write_dataset(tmp_path / "ds", frames, mask_fn=lambda g: _misalign(g, "rot90_fliplr", (-6, 7)))
    base = tmp_path / "base"
    write_dataset(base, frames)  # the aligned masks stand in for another tool's predictions
    out = tmp_path / "cal"
    r = subprocess.run([sys.executable, "-m", "seg2d", "calibrate", "--dataset", str(ds), "--baseline_masks",
                        str(base / "masks"), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["transform"] == "rot90_fliplr" and cal["shift"] == [-6, 7]
