"""Expand an integer label patch into compact per-class channels that carry the partial-annotation mask."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from auto3dseg.errors import Auto3DSegError

__all__ = [
    "UNKNOWN",
    "PartialAnnotationError",
    "annotated_classes",
    "expand_label",
    "PartialLabelToChannelsd",
]

#: Target code of a class channel voxel that must not be trained: class not annotated in the crop,
#: or voxel carries the ignore value. 0 = annotated negative, 1 = annotated positive.
UNKNOWN = 2


class PartialAnnotationError(Auto3DSegError):
    """A label, class set or ``annotated`` bitmask cannot be turned into a partial-annotation target."""


def annotated_classes(annotated, num_classes: int, where: str = "item") -> list[bool]:
    """Decode the datalist's integer ``annotated`` bitmask: bit k set <=> class_names[k] is annotated.

    ``annotated`` may be a Python/numpy int or a 0-d tensor (what a DataLoader makes of an int).
    """
    if isinstance(annotated, torch.Tensor):
        if annotated.numel() != 1 or annotated.is_floating_point():
            raise PartialAnnotationError(
                f"{where}: 'annotated' must be one integer bitmask per crop, got tensor {tuple(annotated.shape)} "
                f"{annotated.dtype}; apply the transform before batching"
            )
        annotated = int(annotated.item())
    if isinstance(annotated, (bool, np.bool_)) or not isinstance(annotated, numbers.Integral):
        raise PartialAnnotationError(
            f"{where}: 'annotated' must be an integer bitmask over class_names, got {annotated!r} "
            f"({type(annotated).__name__}); a string means the datalist was not written by "
            "convert_zarr_to_nifti (MONAI's datafold_read joins dataroot onto strings): re-run the converter"
        )
    annotated = int(annotated)
    if annotated < 0 or annotated >> num_classes:
        raise PartialAnnotationError(
            f"{where}: 'annotated'={annotated} has bits beyond the {num_classes} classes of class_names; "
            "the datalist and the class set disagree: convert again with the same class set"
        )
    return [bool((annotated >> k) & 1) for k in range(num_classes)]


def _spatial_label(label, where: str) -> torch.Tensor:
    """The (z, y, x)-like spatial view of a channel-first single-channel label, without copying."""
    x = torch.as_tensor(label)
    if isinstance(x, torch.Tensor) and hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if x.ndim < 2 or x.shape[0] != 1:
        raise PartialAnnotationError(
            f"{where}: expected a channel-first single-channel integer label (1, *spatial), got shape "
            f"{tuple(x.shape)}; put PartialLabelToChannelsd after the crop and before any other label expansion "
            "(no LabelEmbedClassIndex / class_index in the bundle config)"
        )
    return x[0]


def expand_label(
    label,
    class_index: Sequence[Sequence[int]],
    annotated=None,
    ignore_value: int | None = 255,
    mode: str = "loss",
    where: str = "label",
) -> torch.Tensor:
    """Per-class uint8 channels of one channel-first integer label (1, *spatial); axis order is kept.

    Channel k is 1 where the label value is in ``class_index[k]`` (a class may cover several values).
    ``annotated``: integer bitmask over classes (None = all annotated); ``ignore_value``: unknown voxels
    (None = none). Peak extra memory: the uint8 output plus two bool planes; never int64 or float.

    mode ``"loss"``: C channels, 0 = negative, 1 = positive, ``UNKNOWN`` (2) = not trained (class not
    annotated in this crop, or ignore voxel). Read by ``MaskedDiceBCELoss``; survives nearest resizing.
    mode ``"metric"``: C + 1 channels; 0/1 for annotated classes, all 0 for unannotated ones (MONAI's
    ``DiceHelper(ignore_empty=True)`` then skips them), and channel C = 1 at ignore voxels (read by
    ``MaskedDice``; MONAI's metrics only look at the first C channels).
    """
    if mode not in ("loss", "metric"):
        raise PartialAnnotationError(f"{where}: mode must be 'loss' or 'metric', got {mode!r}")
    num_classes = len(class_index)
    flags = [True] * num_classes if annotated is None else annotated_classes(annotated, num_classes, where)
    x0 = _spatial_label(label, where)
    extra = 1 if mode == "metric" else 0
    out = torch.zeros((num_classes + extra, *x0.shape), dtype=torch.uint8, device=x0.device)
    ignore = (x0 == ignore_value) if ignore_value is not None else None
    if ignore is not None and not bool(ignore.any()):
        ignore = None
    for k, values in enumerate(class_index):
        values = [int(v) for v in values]
        if not flags[k]:
            if mode == "loss":
                out[k].fill_(UNKNOWN)
            continue
        if len(values) == 1:
            out[k].copy_(x0 == values[0])
        else:
            out[k].copy_(torch.isin(x0, torch.tensor(values, dtype=x0.dtype, device=x0.device)))
        if ignore is not None and mode == "loss":
            out[k].masked_fill_(ignore, UNKNOWN)
    if mode == "metric" and ignore is not None:
        out[num_classes].copy_(ignore)
    return out


class PartialLabelToChannelsd(MapTransform):
    """Dictionary transform: the label patch -> compact per-class target carrying the partial-annotation mask.

    Place it after the random crop (and after spatial augmentation) so only the patch is expanded; for
    validation place a ``mode="metric"`` instance at the end of the pipeline. A label that already has more
    than one channel is left unchanged (so a metric instance in a pipeline shared with training is a no-op
    on the already expanded training patch).

    Args:
        keys: label key(s).
        class_index: label values per class, in class_names order (``[c["index"] for c in class_names]``).
        ignore_value: label value of unknown voxels (datalist ``ignore_value``).
        annotated_key: item key holding the integer ``annotated`` bitmask (datalist item field).
        mode: ``"loss"`` or ``"metric"`` (see :func:`expand_label`).
        partial: False = plain training for comparison: every class counts as annotated and ignore voxels
            count as background, as in MONAI's default label embedding.
    """

    backend = [torch.Tensor.__name__]

    def __init__(
        self,
        keys: KeysCollection = "label",
        class_index: Sequence[Sequence[int]] = (),
        ignore_value: int | None = 255,
        annotated_key: str = "annotated",
        mode: str = "loss",
        partial: bool = True,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not class_index:
            raise PartialAnnotationError("PartialLabelToChannelsd: class_index is empty; pass class_names' index lists")
        self.class_index = [[int(v) for v in c] for c in class_index]
        self.ignore_value = None if ignore_value is None else int(ignore_value)
        self.annotated_key = annotated_key
        self.mode = mode
        self.partial = bool(partial)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if label.shape[0] != 1:
                continue
            where = _describe(d, key)
            if self.partial:
                if self.annotated_key not in d:
                    raise PartialAnnotationError(
                        f"{where}: no '{self.annotated_key}' bitmask in the datalist item; convert with "
                        "convert_zarr_to_nifti (it writes one per crop) or set training.partial_annotation: false"
                    )
                annotated, ignore_value = d[self.annotated_key], self.ignore_value
            else:
                annotated, ignore_value = None, None
            out = expand_label(label, self.class_index, annotated, ignore_value, self.mode, where)
            d[key] = convert_to_dst_type(out, label, dtype=torch.uint8)[0]
        return d


def _describe(d: Mapping, key) -> str:
    """Name the crop in error messages: the label's file name when MONAI kept it in the metadata."""
    meta = getattr(d[key], "meta", None) or {}
    name = meta.get("filename_or_obj")
    return f"{name} ({key})" if name else f"item key '{key}'"
