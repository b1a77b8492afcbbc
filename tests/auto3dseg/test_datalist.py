"""auto3dseg.datalist: grouped seeded folds, refusal of empty folds, bitmask, contract checks."""

import pytest

from auto3dseg.datalist import (DatalistError, annotated_bitmask, assign_folds, build_datalist, decode_bitmask,
                                write_datalist)


def test_folds_keep_groups_together_and_balance():
    keys = [f"c{i}" for i in range(10)]
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 2 + ["d"]
    f = assign_folds(keys, groups, 2, seed=0)
    for g in "abcd":
        assert len({f[k] for k, gg in zip(keys, groups) if gg == g}) == 1
    sizes = [sum(1 for k in keys if f[k] == i) for i in range(2)]
    assert sorted(sizes) == [5, 5]                     # greedy largest-first: 4+1 vs 3+2


def test_folds_are_seeded_and_deterministic():
    keys = [f"c{i}" for i in range(12)]
    a = assign_folds(keys, keys, 3, seed=1)
    assert a == assign_folds(keys, keys, 3, seed=1)
    assert {a[k] for k in keys} == {0, 1, 2}
    assert any(assign_folds(keys, keys, 3, seed=s) != a for s in range(2, 6))


@pytest.mark.parametrize("folds,groups,match", [
    (3, ["a", "a", "b"], "pass --folds 2 or fewer"),
    (2, ["a", "a"], "--fold_by crop"),
    (1, ["a", "b"], "at least 2 folds"),
])
def test_empty_validation_fold_is_refused(folds, groups, match):
    with pytest.raises(DatalistError, match=match):
        assign_folds([f"k{i}" for i in range(len(groups))], groups, folds)


def test_bitmask_round_trip():
    names = ["ecs", "pm", "mito", "nuc"]
    m = annotated_bitmask(names, ["nuc", "ecs"])
    assert m == 0b1001 and decode_bitmask(names, m) == ["ecs", "nuc"]


def test_build_checks_the_contract(tmp_path):
    cls = [{"name": "ecs", "index": [1]}, {"name": "mito", "index": [2, 3]}]
    items = [{"image": "images/a_0000.nii.gz", "label": "labels/a.nii.gz", "fold": 0, "annotated": 3},
             {"image": "images/b_0000.nii.gz", "label": "labels/b.nii.gz", "fold": 1, "annotated": 1}]
    dl = build_datalist(cls, items, [{"image": "images/t_0000.nii.gz"}])
    assert dl["class_names"][1]["index"] == [2, 3] and dl["testing"] == [{"image": "images/t_0000.nii.gz"}]
    assert dl["sigmoid"] is True and dl["ignore_value"] == 255
    with pytest.raises(DatalistError, match="mangled"):
        build_datalist(cls, [dict(items[0], annotated_classes="0,1")] + items[1:])
    with pytest.raises(DatalistError, match="every fold"):
        build_datalist(cls, [dict(items[0], fold=0), dict(items[1], fold=2)])
    p = write_datalist(tmp_path / "datalist.json", dl)
    assert p.exists() and not list(tmp_path.glob("*.tmp-*"))
