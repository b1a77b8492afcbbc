"""MaskedDiceBCELoss: exact zero gradients where nothing is annotated, MONAI's numbers where everything is."""

import math

import pytest
import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss

from auto3dseg.partial_loss import MaskedDiceBCELoss
from auto3dseg.partial_transforms import UNKNOWN, PartialAnnotationError, expand_label


def _partial_batch():
    """Two crops of 4x4x4 with 3 classes; crop 0 lacks class 1, both have ignore (255) voxels."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (2, 1, 4, 4, 4), generator=g, dtype=torch.uint8)
    labels[0, 0, 0, :2] = 255
    labels[1, 0, 3, 3] = 255
    index = [[1], [2], [3]]
    annotated = [0b101, 0b111]
    target = torch.stack([expand_label(labels[b], index, annotated[b], 255, "loss") for b in range(2)])
    logits = torch.randn(2, 3, 4, 4, 4, generator=g, requires_grad=True)
    return labels, target, logits


@pytest.mark.parametrize("squared_pred,batch", [(True, False), (False, False), (True, True)])
def test_gradient_is_exactly_zero_for_unannotated_classes_and_ignore_voxels(squared_pred, batch):
    labels, target, logits = _partial_batch()
    loss = MaskedDiceBCELoss(squared_pred=squared_pred, smooth_nr=0.0, smooth_dr=1e-5, batch=batch)(logits, target)
    loss.backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[0, 1]) == 0  # class 1 not annotated in crop 0
    ignore = (labels[:, 0] == 255)  # (B, z, y, x)
    for c in range(3):
        assert torch.count_nonzero(grad[:, c][ignore]) == 0
    # and the annotated, valid voxels do learn
    assert torch.count_nonzero(grad[1, 1]) > 50
    assert torch.count_nonzero(grad[0, 0][~ignore[0]]) == int((~ignore[0]).sum())


def test_deep_supervision_keeps_the_mask_at_every_scale():
    labels, target, logits = _partial_batch()
    low = torch.randn(2, 3, 2, 2, 2, requires_grad=True)
    loss = DeepSupervisionLoss(MaskedDiceBCELoss(squared_pred=True))([logits, low], target)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0, 1]) == 0
    assert torch.count_nonzero(low.grad[0, 1]) == 0
    assert torch.count_nonzero(low.grad[1, 1]) > 0


def test_hand_computed_case_and_monai_dicece_for_one_class():
    # p = sigmoid(logits) = [0.5, 0.75, 0.25, 0.5], truth [1, 1, 0, 0]
    logits = torch.tensor([0.0, math.log(3), -math.log(3), 0.0]).reshape(1, 1, 4, 1, 1)
    truth = torch.tensor([1, 1, 0, 0], dtype=torch.uint8).reshape(1, 1, 4, 1, 1)
    dice = 1 - 2 * (0.5 + 0.75) / (2.0 + 2.0)  # 0.375
    bce = (math.log(2) + math.log(4 / 3)) / 2  # mean of -log p (truth 1), -log(1-p) (truth 0)
    expected = dice + bce
    ours = MaskedDiceBCELoss(smooth_nr=0.0, smooth_dr=0.0)(logits, truth)
    assert float(ours) == pytest.approx(expected, abs=1e-6)
    monai = DiceCELoss(sigmoid=True, smooth_nr=0.0, smooth_dr=0.0)(logits, truth.float())
    assert float(monai) == pytest.approx(expected, abs=1e-6)

    # the same crop plus 2 ignore voxels and an unannotated second class: same loss
    big_logits = torch.cat([logits, torch.tensor([5.0, -7.0]).reshape(1, 1, 2, 1, 1)], dim=2)
    big_logits = torch.cat([big_logits, torch.randn(1, 1, 6, 1, 1)], dim=1)
    label = torch.tensor([1, 1, 0, 0, 255, 255], dtype=torch.uint8).reshape(1, 6, 1, 1)
    target = expand_label(label, [[1], [2]], annotated=0b01, ignore_value=255, mode="loss")[None]
    assert target[0, 1].eq(UNKNOWN).all() and target[0, 0, 4:].eq(UNKNOWN).all()
    masked = MaskedDiceBCELoss(smooth_nr=0.0, smooth_dr=0.0)(big_logits, target)
    assert float(masked) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("squared_pred,smooth_nr,batch", [(True, 0.0, False), (False, 1e-5, False), (True, 0.0, True)])
def test_fully_annotated_equals_monai_dice_plus_bce(squared_pred, smooth_nr, batch):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 6, 5, 4, generator=g)
    truth = (torch.rand(2, 4, 6, 5, 4, generator=g) > 0.6).to(torch.uint8)
    ours = MaskedDiceBCELoss(squared_pred=squared_pred, smooth_nr=smooth_nr, smooth_dr=1e-5, batch=batch)(logits, truth)
    dice = DiceLoss(sigmoid=True, squared_pred=squared_pred, smooth_nr=smooth_nr, smooth_dr=1e-5, batch=batch)
    reference = dice(logits, truth.float()) + torch.nn.BCEWithLogitsLoss()(logits, truth.float())
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)


def test_nothing_valid_gives_zero_with_a_graph():
    logits = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    target = torch.full((1, 2, 3, 3, 3), UNKNOWN, dtype=torch.uint8)
    loss = MaskedDiceBCELoss()(logits, target)
    loss.backward()
    assert float(loss) == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_bad_configuration_and_shapes_are_named():
    with pytest.raises(PartialAnnotationError, match="sigmoid"):
        MaskedDiceBCELoss(sigmoid=False, softmax=True)
    with pytest.raises(PartialAnnotationError, match="one channel per output class"):
        MaskedDiceBCELoss()(torch.zeros(1, 3, 2, 2, 2), torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8))
