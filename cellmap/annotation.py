"""Annotation status of each class in a crop: annotated, annotated-absent, or unknown.

Rules (CellMap semantics, see the format reference section 4):

* a class group ``cropN/<class>`` exists -> the class was annotated over the whole crop:
  ``ANNOTATED`` if it has positive voxels, ``ABSENT`` if all zero (a true negative). The
  s0 array's ``cellmap.annotation.complement_counts`` (``{absent, unknown}``) decides this
  without reading (positive = size - absent - unknown); without it the s0 array is read
  chunk by chunk (stopping at the first positive chunk).
* no group -> ``UNKNOWN``, except: a group class whose atoms all have groups is derivable as
  their union (``source="union"``), and a class inside an annotated-absent group is absent
  too (``source="superset_absent"``).
* label value 255 means "unknown voxel" only when the class's encoding declares
  ``unknown: 255`` **and** ``complement_counts.unknown > 0``; otherwise 255 is a real value
  (an instance id in big instance arrays).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, Iterable, Mapping, Optional, Tuple

from cellmap import _zarr
from cellmap.classes import CATALOGUE, atoms_of, get_class
from cellmap.errors import CellMapError
from cellmap.io import window_chunks
from cellmap.multiscale import read_multiscale

__all__ = ["AnnotationError", "Status", "ClassAnnotation", "ClassStatus", "read_class_annotation",
           "unknown_value", "class_status", "crop_status", "crop_class_names"]

#: Child groups of a crop that are not single classes.
NON_CLASS_GROUPS = frozenset({"all"})


class AnnotationError(CellMapError):
    """Annotation metadata of a class is inconsistent (e.g. counts larger than the array)."""


class Status(str, enum.Enum):
    """Per crop x class: ``annotated`` (present), ``absent`` (annotated, all zero), ``unknown``."""

    ANNOTATED = "annotated"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClassAnnotation:
    """The ``cellmap.annotation`` metadata of one class group and its s0 array.

    ``type`` is ``"semantic"``, ``"instance"`` or None (not declared); ``encoding`` e.g.
    ``{"absent": 0, "present": 1, "unknown": 255}``; ``complement_counts`` e.g.
    ``{"absent": 63990000, "unknown": 0}`` or None when s0 has no such attribute (or no .zattrs).
    """

    location: str
    class_name: str
    type: Optional[str]
    encoding: Mapping[str, int]
    complement_counts: Optional[Mapping[str, int]]
    s0_path: str
    s0_shape: Tuple[int, ...]

    @property
    def s0_location(self) -> str:
        return _zarr.join(self.location, self.s0_path)

    @property
    def size(self) -> int:
        n = 1
        for s in self.s0_shape:
            n *= int(s)
        return n


@dataclass(frozen=True)
class ClassStatus:
    """Status of one class in one crop.

    ``source``: how it was decided: ``"complement_counts"``, ``"read"`` (s0 read),
    ``"group"`` (group exists, contents not checked: reported ANNOTATED), ``"union"`` (group
    derived from its atoms), ``"superset_absent"``, ``"missing"`` (no group). ``location`` is
    the class group (None when derived or unknown); ``members`` the atom names of a union;
    ``unknown_value`` the label value meaning "unknown voxel" (None: no such value);
    ``positive_voxels`` when known.
    """

    name: str
    status: Status
    source: str
    location: Optional[str] = None
    members: Tuple[str, ...] = field(default_factory=tuple)
    unknown_value: Optional[int] = None
    positive_voxels: Optional[int] = None

    @property
    def annotated(self) -> bool:
        """True for ANNOTATED and ABSENT (the class is known over the whole crop)."""
        return self.status is not Status.UNKNOWN


def _annotation_block(attrs: Mapping) -> Mapping:
    cm = attrs.get("cellmap") if isinstance(attrs, Mapping) else None
    ann = cm.get("annotation") if isinstance(cm, Mapping) else None
    return ann if isinstance(ann, Mapping) else {}


def read_class_annotation(location: str) -> ClassAnnotation:
    """Read a class group's annotation metadata (group ``.zattrs`` + its first level's ``.zattrs``)."""
    ms = read_multiscale(location, strict_pyramid=False)
    s0 = ms.levels[0]
    g_ann = _annotation_block(_zarr.read_attrs(location))
    s_ann = _annotation_block(_zarr.read_attrs(ms.array_location(s0)))
    atype = s_ann.get("annotation_type") or g_ann.get("annotation_type") or {}
    raw_type = str(atype.get("type", "")) if isinstance(atype, Mapping) else ""
    kind = "instance" if raw_type.startswith("instance") else "semantic" if raw_type.startswith("semantic") else None
    encoding = dict(atype.get("encoding", {})) if isinstance(atype, Mapping) else {}
    counts = s_ann.get("complement_counts")
    if counts is not None:
        try:
            counts = {str(k): int(v) for k, v in dict(counts).items()}
        except (TypeError, ValueError) as exc:
            raise AnnotationError(f"{ms.array_location(s0)}/.zattrs: complement_counts {counts!r} must map names "
                                  "to integer voxel counts.") from exc
    name = str(s_ann.get("class_name") or g_ann.get("class_name") or location.rstrip("/").split("/")[-1])
    return ClassAnnotation(location, name, kind, encoding, counts, s0.path, s0.shape)


def unknown_value(encoding: Optional[Mapping[str, int]], complement_counts: Optional[Mapping[str, int]]) -> Optional[int]:
    """The label value meaning "unknown voxel", or None.

    Only when the encoding declares ``unknown`` **and** ``complement_counts["unknown"] > 0``:
    otherwise the value (255) is ordinary data, e.g. instance id 255.
    """
    if not encoding or encoding.get("unknown") is None or not complement_counts:
        return None
    return int(encoding["unknown"]) if int(complement_counts.get("unknown", 0)) > 0 else None


def _count_positive(location: str, unknown: Optional[int], stop_at_first: bool = True) -> int:
    import numpy as np

    arr = _zarr.open_array(location)
    shape = tuple(arr.shape)
    total = 0
    for _, sl in window_chunks((0,) * len(shape), shape, tuple(arr.chunks), shape):
        block = np.asarray(arr[sl])
        pos = block != 0
        if unknown is not None:
            pos &= block != unknown
        n = int(pos.sum())
        total += n
        if n and stop_at_first:
            return total
    return total


def _present_status(name: str, location: str, check_contents: bool) -> ClassStatus:
    ann = read_class_annotation(location)
    unk = unknown_value(ann.encoding, ann.complement_counts)
    if ann.complement_counts is not None:
        neg = int(ann.complement_counts.get("absent", 0)) + int(ann.complement_counts.get("unknown", 0))
        pos = ann.size - neg
        if pos < 0:
            raise AnnotationError(
                f"{ann.s0_location}/.zattrs: complement_counts {dict(ann.complement_counts)} sum to {neg} voxels but the "
                f"array has {ann.size}; the counts are wrong. Remove them to have the array read instead.")
        return ClassStatus(name, Status.ANNOTATED if pos > 0 else Status.ABSENT, "complement_counts", location,
                           unknown_value=unk, positive_voxels=pos)
    if not check_contents:
        return ClassStatus(name, Status.ANNOTATED, "group", location, unknown_value=unk)
    pos = _count_positive(ann.s0_location, unk)
    return ClassStatus(name, Status.ANNOTATED if pos else Status.ABSENT, "read", location, unknown_value=unk,
                       positive_voxels=None if pos else 0)


def crop_class_names(crop_location: str) -> Tuple[str, ...]:
    """Class groups present in a crop (child groups except ``all``), sorted."""
    return tuple(n for n in _zarr.child_names(crop_location) if n not in NON_CLASS_GROUPS)


def crop_status(crop_location: str, names: Iterable[str], check_contents: bool = True,
                derive: bool = True) -> Dict[str, ClassStatus]:
    """Status of each class name in a crop group (e.g. ``.../labels/groundtruth/crop1``).

    ``check_contents``: tell ANNOTATED from ABSENT (by complement_counts, else by reading s0).
    ``derive``: allow union-of-atoms groups and absence inherited from an absent group.
    """
    present = set(crop_class_names(crop_location))
    cache: Dict[str, ClassStatus] = {}

    def direct(n: str) -> ClassStatus:
        if n not in cache:
            cache[n] = (_present_status(n, _zarr.join(crop_location, n), check_contents) if n in present
                        else ClassStatus(n, Status.UNKNOWN, "missing"))
        return cache[n]

    out: Dict[str, ClassStatus] = {}
    for name in names:
        get_class(name)  # unknown names raise ClassError
        st = direct(name)
        if st.status is Status.UNKNOWN and derive:
            st = _derive(name, present, direct) or st
        out[name] = st
    return out


def _derive(name: str, present, direct) -> Optional[ClassStatus]:
    cls = get_class(name)
    members = set(cls.members)
    # inside a group that is annotated and all zero -> absent
    for g in sorted(present):
        if g in CATALOGUE and g != name and members <= set(CATALOGUE[g].members) and CATALOGUE[g].is_group:
            if direct(g).status is Status.ABSENT:
                return ClassStatus(name, Status.ABSENT, "superset_absent", members=(g,), positive_voxels=0)
    if cls.is_group:
        atoms = atoms_of(name)
        if all(a in present for a in atoms):
            sts = [direct(a) for a in atoms]
            any_pos = any(s.status is Status.ANNOTATED for s in sts)
            return ClassStatus(name, Status.ANNOTATED if any_pos else Status.ABSENT, "union", members=atoms,
                               positive_voxels=None if any_pos else 0)
    return None


def class_status(crop_location: str, name: str, check_contents: bool = True, derive: bool = True) -> ClassStatus:
    """Status of one class in a crop (see :func:`crop_status`)."""
    return crop_status(crop_location, [name], check_contents=check_contents, derive=derive)[name]
