"""MONAI datalist.json for converted crops: seeded folds grouped by dataset (or crop) and the annotated bitmask.

Contract (read by ``monai.auto3dseg.utils.datafold_read`` unchanged): ``training`` items carry
``image``/``label`` paths relative to the datalist's folder, an integer ``fold`` and an integer
``annotated`` bitmask (bit k <=> ``class_names[k]`` annotated in that crop); ``testing`` items
carry ``image`` only. No other string keys, because ``datafold_read`` joins the data root onto
every string it finds.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence

from auto3dseg.errors import Auto3DSegError
from cellmap.atomic import write_json_atomic

__all__ = [
    "DatalistError",
    "FOLD_BY",
    "assign_folds",
    "annotated_bitmask",
    "decode_bitmask",
    "build_datalist",
    "write_datalist",
]

FOLD_BY = ("dataset", "crop")


class DatalistError(Auto3DSegError):
    """A datalist that MONAI would choke on (empty validation fold, bad fold count)."""


def assign_folds(keys: Sequence[str], groups: Sequence[str], folds: int, seed: int = 0) -> Dict[str, int]:
    """Assign every key a fold in [0, folds) so that keys of one group share a fold.

    Groups are shuffled with ``seed`` and then dealt greedily, largest group first, to the fold
    holding the fewest keys so far (ties: lowest fold). Raises :class:`DatalistError` when a fold
    would be empty (fewer groups than folds, or ``folds < 2``), naming the fix.
    """
    if len(keys) != len(groups):
        raise DatalistError("assign_folds: keys and groups differ in length")
    members: "OrderedDict[str, List[str]]" = OrderedDict()
    for k, g in zip(keys, groups):
        members.setdefault(str(g), []).append(str(k))
    if folds < 2:
        raise DatalistError(
            f"--folds {folds}: at least 2 folds are needed so that fold 0 can validate "
            "(MONAI divides by the number of validation cases); pass --folds 2 or more")
    if len(members) < folds:
        names = ", ".join(list(members)[:8]) + (" ..." if len(members) > 8 else "")
        fix = (f"pass --folds {len(members)} or fewer, or " if len(members) >= 2 else
               "convert crops of at least two groups, or ")
        raise DatalistError(
            f"--folds {folds} with {len(members)} group(s) ({names or 'none'}): some validation fold "
            f"would be empty; {fix}--fold_by crop to split the crops of one dataset")
    order = list(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: seeded order among equal sizes
    load = [0] * folds
    out: Dict[str, int] = {}
    for g in order:
        f = min(range(folds), key=lambda i: (load[i], i))
        load[f] += len(members[g])
        for k in members[g]:
            out[k] = f
    return out


def annotated_bitmask(class_names: Sequence[str], annotated: Iterable[str]) -> int:
    """Integer with bit k set <=> ``class_names[k]`` is in ``annotated``."""
    ann = set(annotated)
    return sum(1 << k for k, name in enumerate(class_names) if name in ann)


def decode_bitmask(class_names: Sequence[str], mask: int) -> List[str]:
    """Inverse of :func:`annotated_bitmask`."""
    return [name for k, name in enumerate(class_names) if int(mask) >> k & 1]


def build_datalist(class_names: Sequence[Mapping], training: Sequence[Mapping], testing: Sequence[Mapping] = (),
                   name: str = "cellmap", description: str = "", ignore_value: int = 255) -> dict:
    """The datalist dict. ``class_names``: [{"name", "index": [label values]}] in channel order;
    ``training``: [{"image", "label", "fold", "annotated"}]; ``testing``: [{"image"}].

    Checks the contract: integer folds covering 0..max with none empty, integer bitmasks,
    no extra string keys.
    """
    train = []
    for item in training:
        extra = {k for k, v in item.items() if isinstance(v, str)} - {"image", "label"}
        if extra:
            raise DatalistError(f"datalist item {item.get('image')}: string keys {sorted(extra)} would be "
                                "mangled by MONAI datafold_read; store them elsewhere")
        train.append({"image": str(item["image"]), "label": str(item["label"]),
                      "fold": int(item["fold"]), "annotated": int(item["annotated"])})
    if train:
        folds = sorted({t["fold"] for t in train})
        if folds != list(range(folds[-1] + 1)) or len(folds) < 2:
            raise DatalistError(f"datalist folds {folds}: every fold 0..K-1 (K >= 2) needs at least one "
                                "training case; lower --folds or use --fold_by crop")
    return {
        "name": name,
        "description": description or "CellMap crops converted by cellmap-auto3dseg (spacing in nm)",
        "modality": "CT",
        "sigmoid": True,
        "ignore_value": int(ignore_value),
        "class_names": [{"name": str(c["name"]), "index": [int(i) for i in c["index"]]} for c in class_names],
        "training": train,
        "testing": [{"image": str(t["image"])} for t in testing],
    }



def write_datalist(path, datalist: dict) -> Path:
    """Write ``datalist.json`` atomically."""
    return write_json_atomic(path, datalist)
