"""The CellMap class catalogue (atomic ids, groups, instance/semantic) and named class sets.

Facts from the CellMap Segmentation Challenge toolbox (``utils/classes.csv``,
``utils/tested_classes.csv``, ``config.py`` INSTANCE_CLASSES). An **atomic** class has one
id; a **group** class (e.g. ``mito`` 50 = ``mito_mem`` 3, ``mito_lum`` 4, ``mito_ribo`` 5)
is the union of its atomic member ids. Class arrays in a crop are stored per class name
(semantic 0/1, instance 0 + object ids).

A :class:`ClassSet` is an ordered list of class names whose label values are 1..N in list
order (0 = background). Named sets live in ``configs/classes/<name>.yaml``; load them with
:func:`load_class_set` (a set name, a YAML path or a list of names).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import yaml

from cellmap.errors import CellMapError

__all__ = ["ClassError", "CellMapClass", "CATALOGUE", "ATOMIC_IDS", "GROUP_MEMBERS", "INSTANCE_CLASSES",
           "SCORED_CLASSES", "get_class", "class_by_id", "atoms_of", "groups_containing", "ClassSet",
           "load_class_set", "available_class_sets", "CLASS_SETS_DIR"]


class ClassError(CellMapError):
    """An unknown class name or a malformed class set."""


#: Every atomic class: name -> id.
ATOMIC_IDS: Dict[str, int] = {
    "ecs": 1, "pm": 2, "mito_mem": 3, "mito_lum": 4, "mito_ribo": 5, "golgi_mem": 6, "golgi_lum": 7,
    "ves_mem": 8, "ves_lum": 9, "endo_mem": 10, "endo_lum": 11, "lyso_mem": 12, "lyso_lum": 13,
    "ld_mem": 14, "ld_lum": 15, "er_mem": 16, "er_lum": 17, "eres_mem": 18, "eres_lum": 19,
    "ne_mem": 20, "ne_lum": 21, "np_out": 22, "np_in": 23, "hchrom": 24, "nhchrom": 25, "echrom": 26,
    "nechrom": 27, "nucpl": 28, "nucleo": 29, "mt_out": 30, "cent": 31, "cent_dapp": 32,
    "cent_sdapp": 33, "ribo": 34, "cyto": 35, "mt_in": 36, "vim": 38, "glyco": 39, "rbc": 45,
    "perox_mem": 47, "perox_lum": 48, "isg_mem": 56, "isg_lum": 57, "isg_ins": 58, "actin": 61,
    "tbar": 62, "bm": 63, "chloroplast_mem": 67, "chloroplast_lum": 68, "chloroplast_sg": 69,
    "vacuole_mem": 71, "vacuole_lum": 72, "plasmodesmata": 74,
}

_r = lambda a, b: tuple(range(a, b + 1))  # noqa: E731  inclusive id range

#: Every group class: name -> (id, atomic member ids).
GROUP_MEMBERS: Dict[str, Tuple[int, Tuple[int, ...]]] = {
    "nuc": (37, _r(20, 29)), "golgi": (40, (6, 7)), "ves": (41, (8, 9)), "endo": (42, (10, 11)),
    "lyso": (43, (12, 13)), "ld": (44, (14, 15)), "eres": (46, (18, 19)), "perox": (49, (47, 48)),
    "mito": (50, (3, 4, 5)), "er": (51, _r(16, 23)), "ne": (52, _r(20, 23)), "np": (53, (22, 23)),
    "chrom": (54, _r(24, 27)), "mt": (55, (30, 36)), "isg": (59, (56, 57, 58)),
    "cell": (60, _r(2, 36) + (38, 39, 47, 48, 56, 57, 58, 61, 62)),
    "er_mem_all": (64, (16, 18, 20)), "ne_mem_all": (65, (20, 22, 23)), "cent_all": (66, (31, 32, 33)),
    "chloroplast": (70, (67, 68, 69)), "vacuole": (73, (71, 72)),
}

#: Instance classes (toolbox ``config.py`` INSTANCE_CLASSES, without the placeholder "instance").
INSTANCE_CLASSES = frozenset({"nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell", "vim"})

#: The 48 classes the challenge scores (``utils/tested_classes.csv``).
SCORED_CLASSES = frozenset({
    "nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell",
    "ecs", "pm", "mito_mem", "mito_lum", "mito_ribo", "golgi_mem", "golgi_lum", "ves_mem", "ves_lum",
    "endo_mem", "endo_lum", "lyso_mem", "lyso_lum", "ld_mem", "ld_lum", "er_mem", "er_lum", "eres_mem",
    "eres_lum", "ne_mem", "ne_lum", "np_out", "np_in", "hchrom", "echrom", "nucpl", "mt_out", "cyto",
    "mt_in", "golgi", "eres", "perox_mem", "perox_lum", "er", "ne", "chrom", "er_mem_all", "ne_mem_all",
})


@dataclass(frozen=True)
class CellMapClass:
    """One catalogue entry: ``name``, CellMap ``id``, atomic ``members`` (``(id,)`` for an atom),
    ``is_group``, ``instance`` (stored/scored as instance ids) and ``scored`` (in the 48)."""

    name: str
    id: int
    members: Tuple[int, ...]
    is_group: bool
    instance: bool
    scored: bool


def _build() -> Dict[str, CellMapClass]:
    cat = {n: CellMapClass(n, i, (i,), False, n in INSTANCE_CLASSES, n in SCORED_CLASSES) for n, i in ATOMIC_IDS.items()}
    for n, (i, mem) in GROUP_MEMBERS.items():
        cat[n] = CellMapClass(n, i, tuple(mem), True, n in INSTANCE_CLASSES, n in SCORED_CLASSES)
    return cat


#: name -> :class:`CellMapClass` for every atomic and group class.
CATALOGUE: Dict[str, CellMapClass] = _build()
_BY_ID = {c.id: c for c in CATALOGUE.values()}
_NAME_OF_ATOM = {i: n for n, i in ATOMIC_IDS.items()}


def get_class(name: str) -> CellMapClass:
    """The catalogue entry of a class name; unknown names raise :class:`ClassError` with suggestions."""
    try:
        return CATALOGUE[name]
    except KeyError:
        near = difflib.get_close_matches(str(name), CATALOGUE, n=3)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ClassError(f"unknown CellMap class {name!r}.{hint} Known classes: cellmap.classes.CATALOGUE.") from None


def class_by_id(class_id: int) -> CellMapClass:
    """The catalogue entry of a CellMap class id (as stored in the ``all`` arrays)."""
    try:
        return _BY_ID[int(class_id)]
    except KeyError:
        raise ClassError(f"unknown CellMap class id {class_id!r}") from None


def atoms_of(name: str) -> Tuple[str, ...]:
    """Atomic class names making up ``name`` (itself for an atom), in id order."""
    return tuple(_NAME_OF_ATOM[i] for i in get_class(name).members)


def groups_containing(name: str) -> Tuple[str, ...]:
    """Group classes whose members include every atom of ``name``, in id order."""
    mem = set(get_class(name).members)
    return tuple(c.name for c in sorted(CATALOGUE.values(), key=lambda c: c.id)
                 if c.is_group and c.name != name and mem <= set(c.members))


# ----------------------------------------------------------------------------------- class sets
#: Folder of the named class sets (``configs/classes`` of the source tree); override with the
#: environment variable ``CELLMAP_CLASS_SETS``.
CLASS_SETS_DIR = Path(os.environ.get("CELLMAP_CLASS_SETS", Path(__file__).resolve().parent.parent / "configs" / "classes"))


@dataclass(frozen=True)
class ClassSet:
    """An ordered set of CellMap classes; label value of ``classes[k]`` is ``k + 1`` (0 = background)."""

    name: str
    classes: Tuple[str, ...]
    description: str = ""

    def __post_init__(self):
        names = tuple(str(c) for c in self.classes)
        if not names:
            raise ClassError(f"class set {self.name!r} is empty; list at least one class.")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ClassError(f"class set {self.name!r} lists {dup} more than once.")
        for c in names:
            get_class(c)
        object.__setattr__(self, "classes", names)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.classes)

    def __contains__(self, name) -> bool:
        return name in self.classes

    @property
    def values(self) -> Tuple[int, ...]:
        """Label values 1..N in class order."""
        return tuple(range(1, len(self.classes) + 1))

    def value_of(self, name: str) -> int:
        """Label value (1-based position) of a class in this set."""
        if name not in self.classes:
            raise ClassError(f"class {name!r} is not in class set {self.name!r} ({list(self.classes)})")
        return self.classes.index(name) + 1

    def is_instance(self, name: str) -> bool:
        return get_class(name).instance

    def overlaps(self) -> List[Tuple[str, str]]:
        """Pairs of classes in this set that share atoms (e.g. (mito_mem, mito)); such sets
        cannot be written as one single-channel label map without losing voxels."""
        out = []
        for i, a in enumerate(self.classes):
            for b in self.classes[i + 1:]:
                if set(get_class(a).members) & set(get_class(b).members):
                    out.append((a, b))
        return out


def available_class_sets() -> List[str]:
    """Names of the class sets in :data:`CLASS_SETS_DIR`."""
    if not CLASS_SETS_DIR.is_dir():
        return []
    return sorted(p.stem for p in CLASS_SETS_DIR.glob("*.yaml"))


def _from_yaml(path: Path) -> ClassSet:
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ClassError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list):
        raise ClassError(f"{path}: a class set is a mapping with a 'classes' list of CellMap class names.")
    try:
        return ClassSet(str(doc.get("name", path.stem)), tuple(doc["classes"]), str(doc.get("description", "")))
    except ClassError as exc:
        raise ClassError(f"{path}: {exc}") from exc


def load_class_set(spec: Union[str, os.PathLike, Sequence[str], ClassSet]) -> ClassSet:
    """A :class:`ClassSet` from a set name (``"organelles14"``), a YAML path, a comma-separated
    string of class names (``"mito,er"``), a list of names, or a ClassSet (returned as is)."""
    if isinstance(spec, ClassSet):
        return spec
    if isinstance(spec, (list, tuple)):
        return ClassSet("custom", tuple(spec))
    s = str(spec)
    p = Path(s)
    if s.endswith((".yaml", ".yml")) or p.is_file():
        if not p.is_file():
            raise ClassError(f"{p}: class-set file not found.")
        return _from_yaml(p)
    named = CLASS_SETS_DIR / f"{s}.yaml"
    if named.is_file():
        return _from_yaml(named)
    if "," in s or s in CATALOGUE:
        return ClassSet("custom", tuple(c.strip() for c in s.split(",") if c.strip()))
    raise ClassError(f"unknown class set {s!r}: not a file, not one of {available_class_sets()} in {CLASS_SETS_DIR}, "
                     "and not a CellMap class name. Pass a set name, a YAML path or a list of class names.")

