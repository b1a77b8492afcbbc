"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from seg2d.metrics import foreground_dice, frame_scores, iou_matrix, mean_scores, relabel_sequential


def _squares(offsets, shape=(20, 40)):
    m = np.zeros(shape, np.int32)
    for label, (y, x) in enumerate(offsets, start=1):
        m[y:y + 10, x:x + 10] = label
    return m


def test_two_squares_overlapping_by_five_columns_have_iou_one_third():
    a, b = _squares([(0, 0)]), _squares([(0, 5)])
    # intersection 10x5 = 50, union 150
    assert iou_matrix(a, b)[0, 0] == pytest.approx(1 / 3)
    s = frame_scores(a, b)
    assert s["iou"] == pytest.approx(1 / 3)
    assert s["dice"] == pytest.approx(2 * 50 / 200)
    assert s["tp_50"] == 0 and s["fp_50"] == 1 and s["fn_50"] == 1
    assert s["f1_50"] == 0.0


def test_identical_masks_score_one_even_with_label_gaps():
    gt = _squares([(0, 0), (0, 20)])
    pred = np.where(gt == 2, 7, gt)  # labels {1, 7}: a gap must not count as a missed object
    s = frame_scores(gt, pred)
    assert s["f1_50"] == 1.0 and s["ap_90"] == 1.0 and s["dice"] == 1.0
    assert relabel_sequential(pred).max() == 2


def test_merge_keeps_dice_but_lowers_f1():
    gt = _squares([(0, 0), (0, 10)])          # two touching 10x10 squares
    merged = (gt > 0).astype(np.int32)         # one 10x20 object: IoU 100/200 = 0.5 with each square
    s = frame_scores(gt, merged)
    assert s["dice"] == 1.0
    assert s["tp_50"] == 1 and s["fp_50"] == 0 and s["fn_50"] == 1
    assert s["f1_50"] == pytest.approx(2 / 3)  # 2*1 / (2*1 + 0 + 1)
    assert s["ap_50"] == pytest.approx(1 / 2)  # 1 / (1 + 0 + 1)
    assert s["f1_75"] == 0.0


def test_precision_recall_f2_by_hand():
    gt = _squares([(0, 0), (0, 10), (10, 0), (10, 30)], shape=(20, 60))
    pred = np.zeros_like(gt)
    pred[gt == 1] = 1
    pred[gt == 2] = 2
    pred[0:10, 45:55] = 3                      # a false positive; GT 3 and 4 are missed
    s = frame_scores(gt, pred)
    assert (s["tp_50"], s["fp_50"], s["fn_50"]) == (2, 1, 2)
    assert s["precision_50"] == pytest.approx(2 / 3)
    assert s["recall_50"] == pytest.approx(1 / 2)
    assert s["f2_50"] == pytest.approx(5 * 2 / (5 * 2 + 4 * 2 + 1))


def test_empty_frames_and_means():
    z = np.zeros((5, 5), np.int32)
    assert frame_scores(z, z)["f1_50"] == 1.0
    assert foreground_dice(z, z) == 1.0
    one = np.ones((5, 5), np.int32)
    assert frame_scores(one, z)["recall_50"] == 0.0
    assert frame_scores(one, z)["precision_50"] == 0.0  # nothing predicted: not a perfect precision
    assert frame_scores(z, one)["recall_50"] == 0.0 and frame_scores(z, one)["f1_50"] == 0.0
    m = mean_scores([frame_scores(one, one), frame_scores(one, z)])
    assert m["dice"] == pytest.approx(0.5) and m["tp_50"] == 1
