"""CellMap scoring on hand-drawn masks with hand-computed answers (no torch, no MONAI)."""

import math

import numpy as np
import pytest

from cellmap.evaluate import (
    Counts,
    CropClassScore,
    EvaluationError,
    ScoringConfig,
    aggregate,
    hausdorff_cap_nm,
    hausdorff_distance_nm,
    label_components,
    match_instances,
    missing_counts,
    normalized_hausdorff,
    ratio_cutoff,
    score_crop_class,
)

VS = (3.0, 2.0, 1.0)  # anisotropic (z, y, x) nm
NORM = math.sqrt(9 + 4 + 1)
SHAPE = (12, 14, 16)
CAP = min(3 * 12, 2 * 14, 1 * 16) / 2  # 8 nm

# every instance test runs whole-crop and streamed in slabs of 1 and 3 z planes
BUDGETS = [10**9, SHAPE[1] * SHAPE[2], 3 * SHAPE[1] * SHAPE[2]]


def cfg(budget):
    return ScoringConfig(max_voxels_in_memory=budget, progress=False)


def box(shape=SHAPE, dtype=np.uint16, **boxes):
    a = np.zeros(shape, dtype)
    for value, (z, y, x) in boxes.items():
        a[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = int(value[1:])
    return a


def inst(t, p, budget=10**9, mask=None, vs=VS):
    return score_crop_class(t, p, vs, "instance", mask=mask, config=cfg(budget))


def sem(t, p, mask=None, budget=10**9):
    return score_crop_class(t, p, VS, "semantic", mask=mask, config=cfg(budget))


CUBE = dict(v1=((2, 6), (2, 6), (2, 6)))  # 64 voxels


def test_identical_masks_score_one():
    t = box(**CUBE)
    c = sem(t, t.copy())
    assert (c.tp, c.fp, c.fn) == (64, 0, 0)
    assert c.iou == 1.0 and c.dice == 1.0 and c.score == 1.0
    i = inst(t, t.copy())
    assert (i.tp, i.fp, i.fn) == (1, 0, 0)
    assert i.f1 == 1.0 and i.hausdorff_nm == 0.0 and i.hausdorff_norm == 1.0 and i.score == 1.0


def test_empty_prediction():
    t = box(v1=((2, 6), (2, 6), (2, 6)), v2=((8, 10), (8, 10), (8, 10)))
    p = np.zeros_like(t)
    c = sem(t, p)
    assert (c.tp, c.fp, c.fn) == (0, 0, 64 + 8) and c.iou == 0.0 and c.dice == 0.0
    i = inst(t, p)
    assert (i.tp, i.fp, i.fn) == (0, 0, 2)
    assert i.f1 == 0.0 and i.score == 0.0
    # each missed truth instance gets the cap
    assert i.n_hausdorff == 2 and i.hausdorff_nm == pytest.approx(CAP)
    assert i.hausdorff_norm == pytest.approx(1.01 ** (-CAP / NORM))


def test_nothing_anywhere_scores_one():
    z = np.zeros(SHAPE, np.uint8)
    assert sem(z, z).iou == 1.0 and sem(z, z).dice == 1.0
    i = inst(z, z)
    assert i.f1 == 1.0 and i.hausdorff_norm == 1.0 and i.score == 1.0


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("budget", BUDGETS)
def test_one_voxel_shift(axis, budget):
    t = box(**CUBE)
    p = np.roll(t, 1, axis=axis)
    # 4x4x4 cube moved by one voxel: overlap 48, union 80
    c = sem(t, p, budget=budget)
    assert (c.tp, c.fp, c.fn) == (48, 16, 16)
    assert c.iou == pytest.approx(48 / 80) and c.dice == pytest.approx(96 / 128)
    i = inst(t, p, budget=budget)
    assert (i.tp, i.fp, i.fn) == (1, 0, 0)
    assert i.hausdorff_nm == pytest.approx(VS[axis])  # one voxel length on that axis
    assert i.score == pytest.approx(math.sqrt(1.0 * 1.01 ** (-VS[axis] / NORM)))


@pytest.mark.parametrize("budget", BUDGETS)
def test_split_instance(budget):
    # truth: one 4x4x8 object; prediction: its two 4x4x4 halves with distinct, touching IDs
    t = box(v1=((2, 6), (2, 6), (4, 12)))
    p = box(v1=((2, 6), (2, 6), (4, 8)), v2=((2, 6), (2, 6), (8, 12)))
    i = inst(t, p, budget=budget)
    assert (i.tp, i.fp, i.fn) == (1, 1, 0)  # touching IDs stay apart, only one may match
    assert i.f1 == pytest.approx(2 / 3)
    # matched half: the far end of the truth is 4 x-voxels (4 nm) away; the extra half gets the cap
    assert i.n_hausdorff == 2
    assert i.hausdorff_sum_nm == pytest.approx(4.0 + CAP)
    expect = (1.01 ** (-4 / NORM) + 1.01 ** (-CAP / NORM)) / 2
    assert i.hausdorff_norm == pytest.approx(expect)
    assert i.score == pytest.approx(math.sqrt(2 / 3 * expect))


@pytest.mark.parametrize("budget", BUDGETS)
def test_merged_instances(budget):
    # truth: two 4x4x4 objects side by side (distinct IDs); prediction: one connected 4x4x8 object
    t = box(v1=((2, 6), (2, 6), (4, 8)), v2=((2, 6), (2, 6), (8, 12)))
    p = box(v7=((2, 6), (2, 6), (4, 12)))
    i = inst(t, p, budget=budget)
    assert (i.tp, i.fp, i.fn) == (1, 0, 1)
    assert i.f1 == pytest.approx(2 / 3)
    assert i.hausdorff_sum_nm == pytest.approx(4.0 + CAP)


@pytest.mark.parametrize("budget", BUDGETS)
def test_disconnected_pieces_of_one_id_are_split(budget):
    t = box(v1=((1, 3), (1, 3), (1, 3)), v2=((8, 10), (8, 10), (8, 10)))
    p = (t > 0).astype(np.uint8)  # one ID, two pieces
    i = inst(t, p, budget=budget)
    assert (i.tp, i.fp, i.fn) == (2, 0, 0) and i.score == 1.0


@pytest.mark.parametrize("budget", BUDGETS)
def test_diagonal_object_is_one_component_across_slabs(budget):
    t = np.zeros(SHAPE, np.uint8)
    for k in range(10):
        t[k, k, k] = 1  # 26-connected only through corners, crosses every slab boundary
    i = inst(t, t.copy(), budget=budget)
    assert (i.tp, i.fp, i.fn) == (1, 0, 0)
    lab, n = label_components(t, connectivity=6)
    assert n == 10 and lab.max() == 10


def test_hausdorff_cap():
    shape = (4, 40, 40)
    vs = (1.0, 1.0, 1.0)
    cap = hausdorff_cap_nm(vs, shape)
    assert cap == 2.0  # min(4, 40, 40) / 2
    t = box(shape, v1=((1, 3), (5, 8), (5, 8)))
    p = t.copy()
    p[1, 6, 8:20] = 1  # a 12-voxel tail: true distance 12 nm
    assert hausdorff_distance_nm(t > 0, p > 0, vs) == pytest.approx(12.0)
    i = inst(t, p, vs=vs)
    assert i.tp == 1 and i.hausdorff_nm == pytest.approx(2.0)
    assert i.hausdorff_norm == pytest.approx(1.01 ** (-2 / math.sqrt(3)))


def test_hausdorff_uses_voxel_spacing():
    a = np.zeros((5, 5, 5), bool)
    b = np.zeros((5, 5, 5), bool)
    a[0, 0, 0] = True
    b[3, 4, 0] = True  # 3 z-voxels and 4 y-voxels away
    assert hausdorff_distance_nm(a, b, (2.0, 1.5, 1.0)) == pytest.approx(math.hypot(6.0, 6.0))
    assert hausdorff_distance_nm(a, a, (2.0, 1.5, 1.0)) == 0.0
    assert hausdorff_distance_nm(a, np.zeros_like(a), (1, 1, 1), cap_nm=7.0) == 7.0


def test_ratio_guard():
    assert ratio_cutoff(1) == pytest.approx(10 + 50 * math.exp(-1 / 5))  # 50.94
    assert ratio_cutoff(5) == pytest.approx(10 + 50 / math.e)
    shape = (3, 3, 110)
    t = box(shape, v1=((0, 3), (0, 3), (0, 3)))
    for n_pred, scored in ((50, True), (51, False)):
        p = np.zeros(shape, np.uint8)
        p[1, 1, 0:2 * n_pred:2] = 1  # n_pred single-voxel objects, 2 apart
        assert label_components(p)[1] == n_pred
        i = inst(t, p, vs=(1, 1, 1))
        if scored:
            assert i.status == "scored" and (i.tp, i.fp, i.fn) == (1, 49, 0)
        else:
            # 51 / 1 > 50.94: the crop contributes nothing
            assert i.status == "skipped_too_many_instances"
            assert (i.tp, i.fp, i.fn, i.n_hausdorff) == (0, 0, 0, 0)


def test_matching_is_minimum_cost_not_greedy():
    # truth A=0, B=1; prediction X=0, Y=1. IoU(A,X)=.5, IoU(B,X)=.4, IoU(A,Y)=.45.
    # greedy takes A-X and leaves B unmatched (cost .5e6 + 1e6+1); optimum A-Y, B-X (1.15e6)
    m = match_instances([0, 1, 0], [0, 0, 1], [0.5, 0.4, 0.45])
    assert sorted(map(tuple, m.tolist())) == [(0, 1), (1, 0)]
    # any overlap can match: a tiny IoU still matches when nothing else competes
    m = match_instances([3], [9], [0.01])
    assert m.tolist() == [[3, 9]]
    assert match_instances([], [], []).shape == (0, 2)


def test_label_components_keeps_distinct_ids_apart():
    a = box((4, 4, 8), v3=((0, 4), (0, 4), (0, 4)), v5=((0, 4), (0, 4), (4, 8)))
    lab, n = label_components(a)
    assert n == 2
    assert set(np.unique(lab[a == 3])) == {1} and set(np.unique(lab[a == 5])) == {2}


def test_mask_multiplies_truth_and_prediction():
    t = box(**CUBE)
    p = box(v1=((2, 6), (2, 6), (2, 6)), v2=((8, 10), (8, 10), (8, 10)))  # 8 false voxels
    mask = np.ones(SHAPE, np.uint8)
    mask[8:10] = 0
    assert sem(t, p).fp == 8
    c = sem(t, p, mask=mask)
    assert (c.tp, c.fp, c.fn) == (64, 0, 0)
    assert inst(t, p, mask=mask).score == 1.0


def test_missing_class_penalties():
    t = box(v1=((2, 6), (2, 6), (2, 6)), v2=((8, 10), (8, 10), (8, 10)))
    s = missing_counts(t, "semantic")
    assert (s.tp, s.fp, s.fn) == (0, 0, int(np.prod(SHAPE))) and s.iou == 0.0
    i = missing_counts(t, "instance", cfg(SHAPE[1] * SHAPE[2]))
    assert (i.tp, i.fn, i.n_hausdorff, i.hausdorff_norm_sum) == (0, 2, 2, 0.0)
    assert i.score == 0.0


def test_pooled_not_averaged_over_crops():
    # crop A: 1 voxel, perfect (IoU 1); crop B: 99 truth voxels, nothing predicted (IoU 0)
    a_t = np.zeros((1, 1, 1), np.uint8) + 1
    b_t = np.ones((1, 9, 11), np.uint8)
    sa = sem(a_t, a_t.copy())
    sb = sem(b_t, np.zeros_like(b_t))
    scores = aggregate([CropClassScore("crop1", "ecs", sa, 1, VS),
                        CropClassScore("crop2", "ecs", sb, 99, VS)])
    pooled = scores.classes["ecs"]
    assert (pooled.tp, pooled.fn) == (1, 99)
    assert pooled.iou == pytest.approx(0.01)  # averaging per crop would give 0.5
    assert scores.semantic_score == pytest.approx(0.01)


def test_overall_is_geometric_mean_of_class_means():
    sem1 = Counts("semantic", tp=3, fp=1, fn=0)  # IoU .75
    sem2 = Counts("semantic", tp=1, fp=0, fn=1)  # IoU .5
    ins = Counts("instance", tp=1, fp=1, fn=0, hausdorff_norm_sum=1.6, n_hausdorff=2)
    s = aggregate([CropClassScore("crop1", n, c, 8, VS)
                   for n, c in (("a", sem1), ("b", sem2), ("mito", ins))])
    assert s.semantic_score == pytest.approx(0.625)
    assert s.instance_score == pytest.approx(math.sqrt(2 / 3 * 0.8))
    assert s.overall_score == pytest.approx(math.sqrt(0.625 * math.sqrt(2 / 3 * 0.8)))
    kinds = {r["class"]: r for r in s.rows() if r["level"] == "summary"}
    assert kinds["overall"]["score"] == pytest.approx(s.overall_score)


def test_normalisation_and_errors():
    assert normalized_hausdorff(0.0, VS) == 1.0
    assert normalized_hausdorff(NORM * 100, VS) == pytest.approx(1.01 ** -100)
    with pytest.raises(EvaluationError, match="prediction shape"):
        sem(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(EvaluationError, match="kind"):
        score_crop_class(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), VS, "panoptic")
    with pytest.raises(EvaluationError, match="cannot pool"):
        Counts("semantic") + Counts("instance")


@pytest.mark.parametrize("dense", [True, False])
def test_matching_equals_brute_force_optimum(dense, monkeypatch):
    import itertools

    import cellmap.evaluate as ev

    monkeypatch.setattr(ev, "_DENSE_LIMIT", 1 << 24 if dense else 0)
    rng = np.random.default_rng(7)
    for _ in range(25):
        ng, npr = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        gi, pi = np.nonzero(rng.random((ng, npr)) < 0.5)
        iou = rng.random(gi.size) * 0.99 + 0.01
        pair = {(int(a), int(b)): int((1 - v) * 1_000_000) for a, b, v in zip(gi, pi, iou)}
        rows = sorted(set(gi.tolist()))

        def cost(m):
            return sum(pair[p] for p in m) + 1_000_001 * (len(rows) - len(m))

        best = cost([])  # brute force over every 1:1 matching of overlapping pairs
        for k in range(1, len(pair) + 1):
            for m in itertools.combinations(pair, k):
                if len({a for a, _ in m}) == k and len({b for _, b in m}) == k:
                    best = min(best, cost(m))
        got = [tuple(x) for x in match_instances(gi, pi, iou).tolist()]
        assert len({a for a, _ in got}) == len(got) == len({b for _, b in got})
        assert cost(got) == best


@pytest.mark.parametrize("budget", BUDGETS)
def test_large_and_sparse_truth_ids(budget):
    # IDs above 2**16 take the ranked path, 255 is an ordinary object (not "unknown")
    t = box(dtype=np.uint32, v4000000000=((1, 4), (1, 4), (1, 4)), v255=((6, 9), (6, 9), (6, 9)),
            v70000=((1, 4), (9, 12), (9, 12)))
    p = (t > 0).astype(np.uint8)
    p[6:9, 6:9, 6:9] = 0  # miss object 255
    i = inst(t, p, budget=budget)
    assert (i.tp, i.fp, i.fn) == (2, 0, 1)
    assert i.hausdorff_sum_nm == pytest.approx(CAP)
