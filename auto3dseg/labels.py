"""Label encoding of a class set: integer values, ignore value, overlap precedence and MONAI ``class_names`` index lists.

Rules (also in the README ``convert`` section):

* Values: the k-th class of the set (0-based) is written as ``k + 1``; 0 is background (annotated,
  none of the classes); the ignore value is 255 (65535 when the set has 255 classes or more).
* Overlaps: a voxel carries exactly one value, chosen by **precedence**. A class whose CellMap atom
  ids are a proper subset of another's always wins over it (``mito_mem`` over ``mito``, ``np_in``
  over ``ne_mem_all``); otherwise thin or small classes (``pm``, ``*_mem``, ``*_mem_all``, and
  :data:`SMALL_CLASSES` such as ``mito_ribo``, ``mt``, ``np_in``) win over the rest, then classes
  with fewer atoms, then earlier classes of the set. ``precedence=[...]`` in
  the class-set YAML overrides the order (the subset rule still applies).
* Channels: MONAI's ``class_names[k].index`` lists the value of class k **and** the values of every
  class of the set that is a proper subset of it, so a group channel (``mito``) is the union of
  its own voxels and those of its members (``mito_mem``, ``mito_lum``) whatever precedence chose.
  Voxels lost to an unrelated class are counted per class in the conversion report.
* Resampling works on **ranks** (``cellmap.resample``): 0 background, 1 ignore, 2.. classes by
  increasing precedence; ``value_of_rank`` maps ranks back to values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from auto3dseg.errors import Auto3DSegError

__all__ = ["LabelEncoding", "is_thin_class", "SMALL_CLASSES"]


#: Small structures (a few voxels across) that must win over the compartment around them.
SMALL_CLASSES = frozenset({"mito_ribo", "ribo", "mt_out", "mt_in", "mt", "actin", "vim", "tbar", "cent", "cent_dapp",
                           "cent_sdapp", "cent_all", "np_out", "np_in", "np", "plasmodesmata", "glyco", "isg_ins",
                           "chloroplast_sg"})


def is_thin_class(name: str) -> bool:
    """Membranes (``pm``, ``*_mem``, ``*_mem_all``) and :data:`SMALL_CLASSES`: one or a few voxels
    across, so they win over the classes around them and survive downsampling."""
    return name == "pm" or name.endswith("_mem") or name.endswith("_mem_all") or name in SMALL_CLASSES


@dataclass(frozen=True)
class LabelEncoding:
    """Class set -> label values, ranks and MONAI ``class_names``.

    ``names``: classes in set order (value = position + 1); ``atoms``: name -> CellMap atom ids;
    ``order``: names from highest to lowest precedence.
    """

    names: Tuple[str, ...]
    atoms: Tuple[FrozenSet[int], ...]
    order: Tuple[str, ...]

    @classmethod
    def build(cls, names: Sequence[str], atoms: Mapping[str, Iterable[int]],
              precedence: Optional[Sequence[str]] = None) -> "LabelEncoding":
        """Encoding of ``names`` with atom ids from ``atoms`` and an optional precedence list."""
        names = tuple(str(n) for n in names)
        if not names:
            raise Auto3DSegError("the class set is empty: pass --classes NAME (a set in configs/classes/) "
                                 "or a list such as --classes '[mito,er]'")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise Auto3DSegError(f"class set lists {dup} more than once")
        missing = [n for n in names if n not in atoms]
        if missing:
            raise Auto3DSegError(f"classes {missing} are not in the CellMap catalogue; check the spelling "
                                 "(see configs/classes/ for the known names)")
        at = {n: frozenset(int(a) for a in atoms[n]) for n in names}
        prefer = {n: i for i, n in enumerate(precedence or ())}
        unknown = [p for p in prefer if p not in at]
        if unknown:
            raise Auto3DSegError(f"precedence lists {unknown}, which are not in the class set {list(names)}")

        def key(n):
            return (prefer.get(n, len(prefer)), 0 if is_thin_class(n) else 1, len(at[n]), names.index(n))

        ranked = sorted(names, key=key)
        order: List[str] = []

        def place(n):  # a class goes right after its proper subsets (placed first, in key order)
            if n in order:
                return
            for m in ranked:
                if at[m] < at[n]:
                    place(m)
            order.append(n)

        for n in ranked:
            place(n)
        return cls(names, tuple(at[n] for n in names), tuple(order))

    # ------------------------------------------------------------------ values
    @property
    def n_classes(self) -> int:
        return len(self.names)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.n_classes < 255 else np.uint16)

    @property
    def ignore_value(self) -> int:
        return 255 if self.dtype == np.uint8 else 65535

    def value(self, name: str) -> int:
        """Label value of a class (position in the set + 1)."""
        return self.names.index(name) + 1

    def rank(self, name: str) -> int:
        """Rank of a class: 2 for the lowest precedence, up to n_classes + 1 for the highest."""
        return 2 + (self.n_classes - 1 - self.order.index(name))

    @property
    def rank_dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.n_classes + 2 <= 256 else np.uint16)

    def value_of_rank(self) -> np.ndarray:
        """Lookup table rank -> label value (0 -> 0, 1 -> ignore, class ranks -> class values)."""
        lut = np.zeros(self.n_classes + 2, dtype=self.dtype)
        lut[1] = self.ignore_value
        for n in self.names:
            lut[self.rank(n)] = self.value(n)
        return lut

    def members(self, name: str) -> List[str]:
        """Classes of the set that are proper subsets of ``name`` (by atom ids)."""
        a = self.atoms[self.names.index(name)]
        return [m for m, b in zip(self.names, self.atoms) if b < a]

    def index_of(self, name: str) -> List[int]:
        """Label values forming the MONAI channel of ``name``: its own and its members'."""
        return sorted([self.value(name)] + [self.value(m) for m in self.members(name)])

    def class_names(self) -> List[Dict]:
        """``class_names`` for datalist.json: [{"name", "index": [values]}] in set order."""
        return [{"name": n, "index": self.index_of(n)} for n in self.names]

    def to_dict(self) -> dict:
        """Description for reports: values, ignore value, precedence, channel index lists."""
        return {"values": {n: self.value(n) for n in self.names}, "ignore_value": self.ignore_value,
                "dtype": str(self.dtype), "precedence": list(self.order), "class_names": self.class_names()}
