"""Per-class sigmoid Dice + BCE loss restricted to annotated classes and non-ignore voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from auto3dseg.partial_transforms import UNKNOWN, PartialAnnotationError

__all__ = ["MaskedDiceBCELoss"]


class MaskedDiceBCELoss(_Loss):
    """Dice + binary cross-entropy on per-class sigmoid outputs, masked by the target's ``UNKNOWN`` code.

    ``forward(input, target)``: ``input`` logits (B, C, *spatial); ``target`` (B, C, *spatial) as written by
    ``PartialLabelToChannelsd(mode="loss")``: 0 = negative, 1 = positive, ``UNKNOWN`` (2) = not trained
    (class not annotated in the crop, or ignore voxel). The mask travels inside the target, so the loss works
    wherever a template calls ``loss(pred, target)`` (also under MONAI's ``DeepSupervisionLoss``, whose
    nearest resizing keeps the codes).

    - Dice: per (sample, class) soft Dice over valid voxels, ``1 - (2*I + smooth_nr) / (P + T + smooth_dr)``
      (P = sum of p or p**2 with ``squared_pred``), averaged over the (sample, class) pairs that have at least
      one valid voxel; with ``batch=True`` sums run over the batch too and classes are averaged.
    - BCE: ``binary_cross_entropy_with_logits`` averaged over all valid (sample, class, voxel) entries.
    - loss = ``lambda_dice * dice + lambda_ce * bce``. Masked entries get an exactly zero gradient.

    On a fully annotated target with no ignore voxels this is MONAI's ``DiceLoss(sigmoid=True)`` plus
    ``BCEWithLogitsLoss()``, i.e. MONAI's ``DiceCELoss(sigmoid=True)`` for one channel. (For several channels
    MONAI's DiceCELoss switches its CE term to softmax cross-entropy across channels, which couples the
    classes; per-class sigmoid outputs need the per-class BCE used here.)
    A batch with no valid entry at all gives a zero loss that still depends on ``input``.

    ``include_background``, ``sigmoid``, ``softmax``, ``to_onehot_y`` are accepted for config compatibility
    with MONAI's DiceCELoss entries; only ``sigmoid=True`` (per-class outputs) is supported.
    """

    def __init__(
        self,
        squared_pred: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        include_background: bool = True,
        sigmoid: bool = True,
        softmax: bool = False,
        to_onehot_y: bool = False,
    ) -> None:
        super().__init__()
        if not sigmoid or softmax or to_onehot_y or not include_background:
            raise PartialAnnotationError(
                "MaskedDiceBCELoss needs per-class sigmoid outputs: sigmoid=True, softmax=False, "
                "to_onehot_y=False, include_background=True (set `sigmoid: true` in input.yaml)"
            )
        if lambda_dice < 0 or lambda_ce < 0:
            raise PartialAnnotationError("MaskedDiceBCELoss: lambda_dice and lambda_ce must be >= 0")
        self.squared_pred = bool(squared_pred)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = bool(batch)
        self.lambda_dice = float(lambda_dice)
        self.lambda_ce = float(lambda_ce)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim != target.ndim or input.shape[:2] != target.shape[:2] or input.shape[2:] != target.shape[2:]:
            raise PartialAnnotationError(
                f"MaskedDiceBCELoss: logits {tuple(input.shape)} and target {tuple(target.shape)} differ; the "
                "target must be the per-class patch of PartialLabelToChannelsd(mode='loss') with one channel "
                "per output class"
            )
        logits = input.float()
        valid = target != UNKNOWN
        positive = target == 1
        validf = valid.to(logits.dtype)
        posf = positive.to(logits.dtype)

        zero = logits.sum() * 0.0  # keeps the graph when nothing is valid
        ce = F.binary_cross_entropy_with_logits(logits, posf, reduction="none")
        n_valid = validf.sum()
        ce = torch.where(valid, ce, torch.zeros_like(ce)).sum() / n_valid.clamp_min(1.0) if n_valid > 0 else zero

        prob = torch.sigmoid(logits) * validf
        pred = prob * prob if self.squared_pred else prob
        dims = list(range(2, logits.ndim))
        if self.batch:
            dims = [0] + dims
        intersection = (prob * posf).sum(dim=dims)
        denominator = pred.sum(dim=dims) + posf.sum(dim=dims)
        dice = 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        active = validf.sum(dim=dims) > 0
        n_active = active.sum()
        dice = torch.where(active, dice, torch.zeros_like(dice)).sum() / n_active.clamp_min(1) if n_active > 0 else zero
        return self.lambda_dice * dice + self.lambda_ce * ce
