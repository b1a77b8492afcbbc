"""PartialLabelToChannelsd and masked_dice on hand-built tiny labels."""

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import DiceHelper
from monai.transforms import Compose, RandSpatialCropd

from auto3dseg.partial_metric import MaskedDice, masked_dice
from auto3dseg.partial_transforms import UNKNOWN, PartialAnnotationError, PartialLabelToChannelsd, expand_label

U = UNKNOWN
# 2x2x2 label; class a = {1}, class b = {2, 3} (two label values), class c = {3} (overlaps b)
LABEL = np.array([[[0, 1], [2, 3]], [[255, 1], [3, 0]]], dtype=np.uint8)
INDEX = [[1], [2, 3], [3]]


def _item(annotated=0b011, name="/data/labels/jrc_synth-a_crop7.nii.gz"):
    label = MetaTensor(torch.from_numpy(LABEL[None]), affine=torch.diag(torch.tensor([8.0, 8.0, 8.0, 1.0])))
    label.meta["filename_or_obj"] = name
    return {"label": label, "annotated": annotated}


def test_loss_mode_by_hand():
    out = PartialLabelToChannelsd(keys="label", class_index=INDEX, mode="loss")(_item(0b011))["label"]
    expected = np.array(
        [
            [[[0, 1], [0, 0]], [[U, 1], [0, 0]]],  # a: value 1; ignore voxel -> U
            [[[0, 0], [1, 1]], [[U, 0], [1, 0]]],  # b: values 2 and 3
            [[[U, U], [U, U]], [[U, U], [U, U]]],  # c: not annotated (bit 2 clear)
        ],
        dtype=np.uint8,
    )
    assert isinstance(out, MetaTensor) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), expected)
    assert torch.equal(out.affine, torch.diag(torch.tensor([8.0, 8.0, 8.0, 1.0], dtype=out.affine.dtype)))


def test_metric_mode_by_hand():
    out = PartialLabelToChannelsd(keys="label", class_index=INDEX, mode="metric")(_item(0b110))["label"]
    expected = np.array(
        [
            [[[0, 0], [0, 0]], [[0, 0], [0, 0]]],  # a: not annotated -> all 0 (DiceHelper skips it)
            [[[0, 0], [1, 1]], [[0, 0], [1, 0]]],  # b
            [[[0, 0], [0, 1]], [[0, 0], [1, 0]]],  # c
            [[[0, 0], [0, 0]], [[1, 0], [0, 0]]],  # ignore voxels
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(out.numpy(), expected)


def test_plain_mode_treats_everything_as_annotated_and_ignore_as_background():
    item = _item(annotated=0)
    del item["annotated"]  # plain training does not need the bitmask
    out = PartialLabelToChannelsd(keys="label", class_index=INDEX, mode="loss", partial=False)(item)["label"]
    expected = np.stack([np.isin(LABEL, c) for c in INDEX]).astype(np.uint8)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_expanded_label_and_missing_label_pass_through():
    t = PartialLabelToChannelsd(keys="label", class_index=INDEX, mode="metric")
    done = torch.zeros(3, 2, 2, 2, dtype=torch.uint8)
    assert t({"label": done, "annotated": 1})["label"] is done
    assert t({"image": 1}) == {"image": 1}


def test_only_the_patch_is_expanded_after_a_random_crop():
    label = torch.zeros(1, 40, 30, 20, dtype=torch.uint8)
    label[0, 10:20] = 1
    label[0, :, :5] = 255
    pipeline = Compose(
        [
            RandSpatialCropd(keys="label", roi_size=(8, 8, 8), random_size=False),
            PartialLabelToChannelsd(keys="label", class_index=[[1], [2]], mode="loss"),
        ]
    )
    pipeline.set_random_state(3)
    out = pipeline({"label": MetaTensor(label), "annotated": 0b01})["label"]
    assert tuple(out.shape) == (2, 8, 8, 8) and out.dtype == torch.uint8
    assert out[1].eq(U).all()


@pytest.mark.parametrize(
    "annotated,match",
    [
        ("0,1", "jrc_synth-a_crop7.nii.gz.*string means"),
        (1 << 3, "bits beyond the 3 classes"),
        (1.0, "integer bitmask"),
    ],
)
def test_bad_bitmask_is_named(annotated, match):
    with pytest.raises(PartialAnnotationError, match=match):
        PartialLabelToChannelsd(keys="label", class_index=INDEX)(_item(annotated))


def test_missing_bitmask_and_multichannel_input_are_named():
    item = _item()
    del item["annotated"]
    with pytest.raises(PartialAnnotationError, match="crop7.*no 'annotated'.*partial_annotation: false"):
        PartialLabelToChannelsd(keys="label", class_index=INDEX)(item)
    with pytest.raises(PartialAnnotationError, match="single-channel"):
        expand_label(torch.zeros(2, 2, 2, 2), INDEX)


def test_masked_dice_by_hand_and_monai_dicehelper_skips_unannotated():
    # 1 sample, 2 classes, 6 voxels in a row; class 1 not annotated; voxel 5 is ignore
    label = torch.tensor([1, 1, 0, 0, 2, 255], dtype=torch.uint8).reshape(1, 1, 6, 1)
    pred = torch.tensor([[0.9, 0.2, 0.8, 0.1, 0.9, 0.9], [0.9] * 6]).reshape(1, 2, 6, 1)
    loss_t = expand_label(label[0], [[1], [2]], annotated=0b01, mode="loss")[None]
    metric_t = expand_label(label[0], [[1], [2]], annotated=0b01, mode="metric")[None]
    # class 0 over the 5 valid voxels: pred {0, 2, 4}, truth {0, 1}: 2*1/(3+2) = 0.4 (voxel 5 left out)
    for target in (loss_t, metric_t):
        d = masked_dice(pred, target)
        assert float(d[0, 0]) == pytest.approx(0.4) and torch.isnan(d[0, 1])
    dice, counted = MaskedDice()(pred, metric_t)
    assert float(dice[0]) == pytest.approx(0.4) and torch.isnan(dice[1]) and counted.tolist() == [1.0, 0.0]
    # the templates' DiceHelper on the metric target: unannotated class skipped (NaN), ignore voxel counted
    monai = DiceHelper(sigmoid=True, ignore_empty=True, reduction="none", get_not_nans=False)(pred, metric_t)
    assert float(monai[0, 0]) == pytest.approx(2 * 1 / (4 + 2)) and torch.isnan(monai[0, 1])
