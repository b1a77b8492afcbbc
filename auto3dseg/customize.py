"""Hooks that apply our partial-annotation training to every generated Auto3DSeg bundle."""

from __future__ import annotations

import copy
import os

import yaml

from cellmap.atomic import write_yaml_atomic
from auto3dseg.errors import Auto3DSegError

__all__ = ["input_overrides", "after_generation", "partial_enabled", "LOSS_TARGET", "TRANSFORM_TARGET"]

LOSS_TARGET = "auto3dseg.partial_loss.MaskedDiceBCELoss"
TRANSFORM_TARGET = "auto3dseg.partial_transforms.PartialLabelToChannelsd"
# folder holding the ``auto3dseg`` package: SegResNet adds a custom transform's ``path`` to sys.path
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# algos whose hyper_parameters.yaml takes input.yaml keys verbatim (SegResNet and our CI template)
_VERBATIM_ALGOS = ("segresnet", "tinyseg")
_KNOWN_ALGOS = _VERBATIM_ALGOS + ("swinunetr",)


def partial_enabled(config: dict | None) -> bool:
    """``training.partial_annotation`` of configs/auto3dseg.yaml (default True; False = plain training)."""
    value = ((config or {}).get("training") or {}).get("partial_annotation", True)
    if not isinstance(value, bool):
        raise Auto3DSegError(
            f"configs/auto3dseg.yaml: training.partial_annotation must be true or false, got {value!r}"
        )
    return value


def _classes(datalist: dict) -> tuple[list[str], list[list[int]], int]:
    """(names, index lists, ignore value) from the converter's datalist."""
    class_names = (datalist or {}).get("class_names")
    if not isinstance(class_names, list) or not class_names or not all(
        isinstance(c, dict) and "name" in c and "index" in c for c in class_names
    ):
        raise Auto3DSegError(
            "datalist.json: 'class_names' must be a list of {name, index} entries (converter output); "
            "re-run convert_zarr_to_nifti"
        )
    names = [str(c["name"]) for c in class_names]
    index = [[int(v) for v in (c["index"] if isinstance(c["index"], list) else [c["index"]])] for c in class_names]
    ignore_value = int(datalist.get("ignore_value", 255))
    return names, index, ignore_value


def _loss() -> dict:
    """Our loss with the templates' DiceCELoss settings; plain mode uses it too (its targets hold no UNKNOWN)."""
    # the templates' DiceCELoss settings (squared_pred, smooth_nr 0, smooth_dr 1e-5) with per-class BCE and the mask
    return {"_target_": LOSS_TARGET, "squared_pred": True, "smooth_nr": 0.0, "smooth_dr": 1.0e-5}


def _transform(index: list[list[int]], ignore_value: int, mode: str, partial: bool, label_key="label") -> dict:
    return {
        "_target_": TRANSFORM_TARGET,
        "keys": label_key,
        "class_index": copy.deepcopy(index),
        "ignore_value": ignore_value,
        "annotated_key": "annotated",
        "mode": mode,
        "partial": partial,
    }


def _bundle_keys(config: dict, datalist: dict) -> dict:
    """Every hyper-parameter key of our customisation for segresnet-like bundles (see :func:`input_overrides`)."""
    partial = partial_enabled(config)
    names, index, ignore_value = _classes(datalist)
    num_values = max(max(c) for c in index) + 1
    return {
        "sigmoid": True,
        "class_names": names,
        "output_classes": len(names),
        "crop_ratios": [1.0] * num_values,
        "loss": _loss(),
        "custom_data_transforms": [
            {
                "key": "after_augment_transforms",
                "path": _PACKAGE_PARENT,
                "transform": _transform(index, ignore_value, "loss", partial),
            },
            {
                "key": "final_transforms",
                "path": _PACKAGE_PARENT,
                "transform": _transform(index, ignore_value, "metric", partial),
            },
        ],
        "metric": {"_target_": "auto3dseg.partial_metric.MaskedDice"},
    }


def input_overrides(algo: str, config: dict, datalist: dict) -> dict:
    """Keys to merge (last, overriding) into the Auto3DSeg ``input`` dict when generating ``algo`` bundles.

    SegResNet (and the CI template) write every input key verbatim into hyper_parameters.yaml:
    per-class sigmoid outputs (``sigmoid``, ``output_classes``), ``class_names`` as plain names (so the
    template adds no ``LabelEmbedClassIndex``; the dict form stays in the datalist), our ``loss``,
    ``crop_ratios`` (every label value 0..max may be a crop centre) and ``metric`` (the CI template's
    validation hook; SegResNet ignores it). ``custom_data_transforms`` (label expansion after crop and
    augmentation, ``after_augment_transforms`` mode "loss", and for validation ``final_transforms`` mode
    "metric") is an input key for the CI template only: SegResNet's ``export_to_disk`` copies each custom
    transform's module from a path relative to the current directory, which fails for a packaged module, so
    for segresnet :func:`after_generation` writes that key into hyper_parameters.yaml (where its
    ``Segmenter`` reads it at train time). SwinUNETR reads only ``class_names`` and ``sigmoid`` from here; the
    rest is done by :func:`after_generation`. Unknown algos get ``{}``.
    """
    if algo not in _KNOWN_ALGOS:
        return {}
    keys = _bundle_keys(config, datalist)
    if algo != "tinyseg":
        del keys["custom_data_transforms"]
    return keys


def after_generation(bundle_dir: str, algo: str, config: dict, datalist: dict) -> None:
    """Idempotent edits of a freshly generated bundle's YAML configs; a no-op for algos we do not know.

    segresnet / CI template: write our keys (those of :func:`input_overrides` plus ``custom_data_transforms``)
    into configs/hyper_parameters.yaml and clear ``class_index`` (also guards against an input merge that lost
    them). swinunetr: see :func:`_swinunetr`.
    Files are rewritten atomically and only when their content changes.
    """
    if algo not in _KNOWN_ALGOS:
        return
    configs = os.path.join(bundle_dir, "configs")
    if not os.path.isdir(configs):
        raise Auto3DSegError(f"{bundle_dir}: no configs/ folder; is this a generated {algo} bundle?")
    overrides = _bundle_keys(config, datalist)
    if algo in _VERBATIM_ALGOS:
        hp = os.path.join(configs, "hyper_parameters.yaml")
        doc = _load(hp)
        doc.update(overrides)
        doc["class_index"] = None
        _save(hp, doc)
    else:
        _swinunetr(configs, overrides, datalist, partial_enabled(config))


def _swinunetr(configs: str, overrides: dict, datalist: dict, partial: bool) -> None:
    """SwinUNETR: single-channel label until after the crop, our loss and targets, the missing keys.

    - transforms_train/validate: the template's label expansion (a ``Lambdad`` summing int64 masks over the
      whole image) becomes a ``CastToTyped`` to uint8; the crop becomes ``RandCropByLabelClassesd`` on the
      single-channel label (every value 0..max a centre, ``@roi_size``, ``@num_crops_per_image``);
      ``PartialLabelToChannelsd`` is appended (mode "loss" for train, "metric" for validate).
    - hyper_parameters: our ``loss``, ``softmax: false``, ``output_classes``, plain ``class_names``,
      ``patch_size: "@roi_size"`` and ``num_patches_per_image: "@num_crops_per_image"`` (keys the template's
      sigmoid branch references but never defines), ``valid_at_orig_resolution_at_last: false`` (that final
      pass re-embeds labels in train.py, unaware of annotations, and would overwrite the selection score).
    """
    names, index, ignore_value = _classes(datalist)
    hp_path = os.path.join(configs, "hyper_parameters.yaml")
    hp = _load(hp_path)
    hp.update(
        {
            "loss": copy.deepcopy(overrides["loss"]),
            "softmax": False,
            "output_classes": len(names),
            "class_names": list(names),
            "patch_size": "@roi_size",
            "num_patches_per_image": "@num_crops_per_image",
            "valid_at_orig_resolution_at_last": False,
        }
    )
    _save(hp_path, hp)
    crop = {
        "_target_": "RandCropByLabelClassesd",
        "keys": ["@image_key", "@label_key"],
        "label_key": "@label_key",
        "num_classes": len(overrides["crop_ratios"]),
        "ratios": list(overrides["crop_ratios"]),
        "spatial_size": "@roi_size",
        "num_samples": "@num_crops_per_image",
        "warn": False,
    }
    for name, mode, needs_crop in (("transforms_train", "loss", True), ("transforms_validate", "metric", False)):
        path = os.path.join(configs, f"{name}.yaml")
        doc = _load(path)
        steps = (doc.get(name) or {}).get("transforms")
        if not isinstance(steps, list):
            raise Auto3DSegError(f"{path}: no '{name}#transforms' list; the SwinUNETR template changed")
        steps[:] = [s for s in steps if not (isinstance(s, dict) and s.get("_target_") == TRANSFORM_TARGET)]
        found_crop = False
        for i, step in enumerate(steps):
            if _uses(step, "RandCropByLabelClassesd"):
                steps[i] = copy.deepcopy(crop)
                found_crop = True
            elif _uses(step, "Lambdad") and _touches_label(step):
                steps[i] = {
                    "_target_": "CastToTyped",
                    "keys": ["@image_key", "@label_key"],
                    "dtype": ["$torch.float32", "$torch.uint8"],
                }
        if needs_crop and not found_crop:
            raise Auto3DSegError(f"{path}: no RandCropByLabelClassesd step found; the SwinUNETR template changed")
        steps.append(_transform(index, ignore_value, mode, partial, label_key="@label_key"))
        _save(path, doc)


def _uses(step, target: str) -> bool:
    """True when a transform entry is ``target`` or a Compose containing it."""
    if not isinstance(step, dict):
        return False
    if step.get("_target_") == target:
        return True
    return any(_uses(s, target) for s in step.get("transforms", []) or [])


def _touches_label(step) -> bool:
    text = yaml.safe_dump(step)
    return "@label_key" in text or "label" in text


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise Auto3DSegError(f"{path}: missing; regenerate the bundle")
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict):
        raise Auto3DSegError(f"{path}: not a YAML mapping")
    return doc


def _save(path: str, doc: dict) -> None:
    """Write YAML atomically (temp file in the same folder + os.replace); untouched if unchanged."""
    with open(path) as fh:
        if yaml.safe_load(fh) == doc:
            return
    write_yaml_atomic(path, doc)
