"""Dice metric for model selection that skips unannotated classes and ignore voxels."""

from __future__ import annotations

import torch

from auto3dseg.partial_transforms import UNKNOWN, PartialAnnotationError

__all__ = ["masked_dice", "MaskedDice"]


def _valid_and_truth(y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(valid, truth) bool tensors (B, C, *spatial) from either target encoding of ``PartialLabelToChannelsd``."""
    if y.shape[1] == num_classes:  # mode "loss": 0/1/UNKNOWN per class
        return y != UNKNOWN, y == 1
    if y.shape[1] == num_classes + 1:  # mode "metric": 0/1 per class (unannotated all 0) + ignore channel
        truth = y[:, :num_classes] == 1
        valid = (y[:, num_classes:] == 0).expand_as(truth)
        return valid, truth
    raise PartialAnnotationError(
        f"masked_dice: target has {y.shape[1]} channels for {num_classes} predicted classes; expected "
        f"{num_classes} (PartialLabelToChannelsd mode='loss') or {num_classes + 1} (mode='metric')"
    )


def masked_dice(y_pred: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per (sample, class) Dice of thresholded predictions over valid voxels; NaN where it must not count.

    ``y_pred``: probabilities (B, C, *spatial) (binarised with ``> threshold``) or bool masks. ``y``: a target
    of ``PartialLabelToChannelsd`` in either mode. Invalid voxels (ignore value, or the whole class when it is
    not annotated in the crop) are left out of both prediction and truth. A (sample, class) is NaN when the
    class is not annotated there (mode "loss" tells this apart) or when its valid truth is empty (MONAI's
    ``ignore_empty=True`` convention, which is also how mode "metric" marks unannotated classes).
    Returns float32 (B, C).
    """
    num_classes = y_pred.shape[1]
    valid, truth = _valid_and_truth(y, num_classes)
    pred = y_pred if y_pred.dtype == torch.bool else y_pred > threshold
    pred = pred & valid
    truth = truth & valid
    dims = list(range(2, y_pred.ndim))
    inter = (pred & truth).sum(dim=dims).float()
    n_truth = truth.sum(dim=dims).float()
    n_pred = pred.sum(dim=dims).float()
    dice = 2.0 * inter / (n_truth + n_pred).clamp_min(1.0)
    skip = (n_truth == 0) | ~valid.flatten(2).any(dim=2)
    return torch.where(skip, torch.full_like(dice, float("nan")), dice)


class MaskedDice:
    """Drop-in for MONAI's ``DiceHelper(sigmoid=True)`` as a validation hook: ``metric(pred, target)``.

    Returns ``(dice, not_nans)``, each of shape (C,): the per-class Dice averaged over the samples where the
    class counts (see :func:`masked_dice`) and how many samples counted; a class that never counts has
    Dice NaN and ``not_nans`` 0, so a NaN-aware mean over classes skips it.
    """

    def __init__(self, threshold: float = 0.5, sigmoid: bool = True, **_ignored) -> None:
        if not sigmoid:
            raise PartialAnnotationError("MaskedDice needs per-class sigmoid outputs (sigmoid: true)")
        self.threshold = float(threshold)

    def __call__(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per_item = masked_dice(y_pred, y, self.threshold)
        counted = ~torch.isnan(per_item)
        not_nans = counted.sum(dim=0).float()
        total = torch.where(counted, per_item, torch.zeros_like(per_item)).sum(dim=0)
        dice = torch.where(not_nans > 0, total / not_nans.clamp_min(1.0), torch.full_like(total, float("nan")))
        return dice, not_nans
