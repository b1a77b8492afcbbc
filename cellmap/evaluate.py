"""CellMap challenge scoring (the toolbox's HEAD rules) computed locally, slab by slab.

Layers, as nnU-Net layers its metrics (array -> crop -> hierarchy):

* pure numpy: :func:`semantic_counts`, :func:`label_components`, :func:`match_instances`,
  :func:`hausdorff_distance_nm`, :func:`instance_counts`; the pooled ratios live on
  :class:`Counts` (``iou``, ``dice``, ``f1``, ``hausdorff_norm``, ``score``);
* one crop x class: :func:`score_crop_class` takes array-likes (numpy, zarr, or
  :class:`cellmap.submission.OnGrid`) and streams them in z slabs, so a crop need not fit in memory;
* a hierarchy: :func:`evaluate_hierarchies` scores ``prediction/crop<ID>/<class>`` against
  ``truth/crop<ID>/<class>``, :func:`aggregate` pools per class and computes the overall score,
  :func:`write_report` writes ``scores.csv``, ``scores.md`` and ``scores.png``.

Rules (janelia-cellmap/cellmap-segmentation-challenge, ``utils/eval_utils`` at 6b9ad68):

* semantic: ``> 0`` masks, per crop TP/FP/FN voxels, pooled per class; IoU = TP/(TP+FP+FN) and
  Dice = 2TP/(2TP+FP+FN), both 1.0 when the pooled denominator is 0;
* instance: the prediction is relabelled by connected components (26-connectivity; distinct IDs
  stay apart); the crop is skipped (contributes nothing) when nP/nG > 10 + 50 exp(-nG/5) or the
  number of overlapping pairs exceeds ``max_overlap_edges``; a 1:1 matching minimises the sum of
  int((1 - IoU) * 1e6) over matched pairs plus 1e6 + 1 per unmatched truth instance, any IoU > 0
  may match (solved with ``scipy.optimize.linear_sum_assignment`` on each connected component of
  the overlap graph; the toolbox uses OR-Tools min-cost flow on the same costs); TP = matched
  pairs, FP = unmatched predictions, FN = unmatched truth; one Hausdorff distance per truth
  instance (EDT with the voxel spacing, symmetric maximum), capped at min over axes of
  (voxel_size * shape) / 2, unmatched truth and every unmatched prediction get the cap; each is
  normalised as 1.01 ** (-d / |voxel_size|); per class F1 = 2TP/(2TP+FP+FN) and
  combined = sqrt(F1 * mean normalised distance), all 1.0 when nothing exists anywhere;
* a class missing from the prediction: instance -> every truth instance a false negative with
  normalised distance 0; semantic -> every voxel of the crop a false negative;
* ``truth/crop<ID>/<class>_mask`` (when present) multiplies truth and prediction;
* overall = sqrt(mean per-class instance combined * mean per-class semantic IoU).

Deviations, on purpose: the number of truth instances is the number of distinct non-zero IDs
(the toolbox uses the maximum ID); an unmatched truth instance always gets the cap (the toolbox's
remapping can pair it with an unrelated unmatched prediction that happens to carry the same ID).
Arrays are (z, y, x); voxel sizes are (z, y, x) in nm; distances are in nm.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from cellmap.atomic import atomic_path, write_text_atomic
from cellmap.errors import CellMapError

__all__ = [
    "EvaluationError",
    "ScoringConfig",
    "Counts",
    "CropClassScore",
    "Scores",
    "INSTANCE_CLASSES",
    "instance_class_names",
    "ratio_cutoff",
    "hausdorff_cap_nm",
    "normalized_hausdorff",
    "semantic_counts",
    "label_components",
    "match_instances",
    "hausdorff_distance_nm",
    "instance_counts",
    "missing_counts",
    "score_crop_class",
    "aggregate",
    "evaluate_hierarchies",
    "write_report",
]

#: The challenge's tested instance classes (``config.py`` INSTANCE_CLASSES x tested_classes.csv);
#: used when :mod:`cellmap.classes` cannot say.
INSTANCE_CLASSES = ("nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell")

SEMANTIC = "semantic"
INSTANCE = "instance"
_STRUCT26 = np.ones((3, 3, 3), dtype=bool)


class EvaluationError(CellMapError):
    """Truth and prediction that cannot be scored (shapes, missing truth, bad arguments)."""


@dataclass(frozen=True)
class ScoringConfig:
    """Knobs of the scoring, defaults equal to the toolbox's ``EvaluationConfig``.

    ``max_voxels_in_memory``: slab budget in voxels per array (the crop is streamed in z slabs of
    at most this many voxels; the whole crop is one slab when it fits).
    ``workdir``: where a crop larger than the budget keeps its relabelled prediction (a
    memory-mapped uint32 file, deleted afterwards); default the system temporary folder.
    """

    ratio_final: float = 10.0
    ratio_initial: float = 50.0
    ratio_decay: float = 5.0
    max_overlap_edges: int = 5_000_000
    cost_scale: int = 1_000_000
    max_voxels_in_memory: int = 1 << 25
    workdir: Optional[str] = None
    progress: Optional[bool] = None  # None: tqdm decides (on for a terminal)


@dataclass(frozen=True)
class Counts:
    """Poolable counts of one crop x class (or of a class pooled over crops).

    ``kind``: "semantic" (voxel counts) or "instance" (object counts plus per-instance
    Hausdorff sums: raw in nm and normalised). ``n_hausdorff`` is the number of distances summed.
    """

    kind: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    hausdorff_sum_nm: float = 0.0
    hausdorff_norm_sum: float = 0.0
    n_hausdorff: int = 0
    status: str = "scored"

    def __add__(self, other: "Counts") -> "Counts":
        if other.kind != self.kind:
            raise EvaluationError(f"cannot pool {self.kind} with {other.kind} counts")
        return Counts(self.kind, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                      self.hausdorff_sum_nm + other.hausdorff_sum_nm,
                      self.hausdorff_norm_sum + other.hausdorff_norm_sum,
                      self.n_hausdorff + other.n_hausdorff, "pooled")

    def _nothing(self) -> bool:
        return self.tp + self.fp + self.fn == 0 and self.n_hausdorff == 0

    @property
    def iou(self) -> float:
        """Semantic IoU TP/(TP+FP+FN) (1.0 when empty); NaN for instance counts."""
        if self.kind != SEMANTIC:
            return float("nan")
        d = self.tp + self.fp + self.fn
        return self.tp / d if d else 1.0

    @property
    def dice(self) -> float:
        """Semantic Dice 2TP/(2TP+FP+FN) (1.0 when empty); NaN for instance counts."""
        if self.kind != SEMANTIC:
            return float("nan")
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def f1(self) -> float:
        """Instance F1 2TP/(2TP+FP+FN); 1.0 when nothing exists; NaN for semantic counts."""
        if self.kind != INSTANCE:
            return float("nan")
        if self._nothing():
            return 1.0
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    @property
    def hausdorff_nm(self) -> float:
        """Mean Hausdorff distance in nm over the pooled instances (NaN when there are none)."""
        if self.kind != INSTANCE or self.n_hausdorff == 0:
            return float("nan")
        return self.hausdorff_sum_nm / self.n_hausdorff

    @property
    def hausdorff_norm(self) -> float:
        """Mean normalised Hausdorff distance (1.0 when nothing exists); NaN for semantic."""
        if self.kind != INSTANCE:
            return float("nan")
        if self._nothing():
            return 1.0
        return self.hausdorff_norm_sum / self.n_hausdorff if self.n_hausdorff else 0.0

    @property
    def score(self) -> float:
        """IoU for semantic counts; sqrt(F1 * mean normalised Hausdorff) for instance counts."""
        if self.kind == SEMANTIC:
            return self.iou
        return math.sqrt(self.f1 * self.hausdorff_norm)


@dataclass(frozen=True)
class CropClassScore:
    """The counts of one crop x class with where they came from."""

    crop: str
    class_name: str
    counts: Counts
    n_voxels: int
    voxel_size_nm: Tuple[float, float, float]


@dataclass
class Scores:
    """Per crop x class scores, pooled per class, and the overall numbers."""

    crops: List[CropClassScore]
    classes: Dict[str, Counts]
    instance_score: float
    semantic_score: float
    overall_score: float
    notes: List[str] = field(default_factory=list)

    def rows(self) -> List[dict]:
        """Table rows: one per crop x class, one per class (crop ``all``), then the summary."""
        out = []
        for s in self.crops:
            out.append(_row("crop", s.crop, s.class_name, s.counts))
        for name, c in sorted(self.classes.items()):
            out.append(_row("class", "all", name, c))
        for name, value in (("instance_mean", self.instance_score),
                            ("semantic_mean", self.semantic_score),
                            ("overall", self.overall_score)):
            row = _row("summary", "all", name, None)
            row["score"] = value
            out.append(row)
        return out


_COLUMNS = ("level", "crop", "class", "kind", "iou", "dice", "f1", "hausdorff", "hausdorff_norm",
            "score", "tp", "fp", "fn", "n_hausdorff", "status")


def _row(level: str, crop: str, name: str, c: Optional[Counts]) -> dict:
    row = {k: float("nan") for k in _COLUMNS}
    row.update(level=level, crop=crop, **{"class": name}, kind="", status="")
    if c is not None:
        row.update(kind=c.kind, iou=c.iou, dice=c.dice, f1=c.f1, hausdorff=c.hausdorff_nm,
                   hausdorff_norm=c.hausdorff_norm, score=c.score, tp=c.tp, fp=c.fp, fn=c.fn,
                   n_hausdorff=c.n_hausdorff, status=c.status)
    return row


# ---------------------------------------------------------------------------------------------
# pure numpy layer


def ratio_cutoff(n_truth: int, config: ScoringConfig = ScoringConfig()) -> float:
    """Largest allowed nP/nG: ratio_final + ratio_initial * exp(-nG / ratio_decay)."""
    return float(config.ratio_final + config.ratio_initial * math.exp(-n_truth / config.ratio_decay))


def hausdorff_cap_nm(voxel_size_nm: Sequence[float], shape: Sequence[int]) -> float:
    """The distance cap in nm: min over axes of voxel_size * shape / 2 (z, y, x)."""
    return float(min(float(v) * int(s) / 2.0 for v, s in zip(voxel_size_nm, shape)))


def normalized_hausdorff(distance_nm, voxel_size_nm: Sequence[float]):
    """1.01 ** (-d / |voxel_size|): 1 for d = 0, falling towards 0; d in nm."""
    norm = float(np.linalg.norm(np.asarray(voxel_size_nm, dtype=np.float64)))
    return np.power(1.01, -np.asarray(distance_nm, dtype=np.float64) / norm)


def _vs3(voxel_size_nm: Sequence[float]) -> Tuple[float, float, float]:
    vs = tuple(float(v) for v in voxel_size_nm)
    if len(vs) != 3 or not all(v > 0 for v in vs):
        raise EvaluationError(f"voxel size must be 3 positive numbers (z, y, x) in nm, got {vs}")
    return vs  # type: ignore[return-value]


def semantic_counts(truth: np.ndarray, pred: np.ndarray,
                    mask: Optional[np.ndarray] = None) -> Counts:
    """Voxel TP/FP/FN of ``pred > 0`` against ``truth > 0`` (only where ``mask`` is non-zero)."""
    t = np.asarray(truth) > 0
    p = np.asarray(pred) > 0
    if t.shape != p.shape:
        raise EvaluationError(f"truth shape {t.shape} != prediction shape {p.shape}")
    if mask is not None:
        m = np.asarray(mask) > 0
        t &= m
        p &= m
    tp = int(np.count_nonzero(t & p))
    return Counts(SEMANTIC, tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(t)) - tp)


def label_components(labels: np.ndarray, connectivity: int = 26) -> Tuple[np.ndarray, int]:
    """Connected components of every non-zero ID separately (distinct IDs never merge).

    ``labels``: integer or boolean (z, y, x) array, 0 = background. Returns (uint32 array with
    components numbered 1..n in scan order of their first voxel's bounding box, n).
    ``connectivity``: 26 (the toolbox's cc3d default), 18 or 6.
    """
    lab = np.asarray(labels)
    structure = ndimage.generate_binary_structure(lab.ndim, {6: 1, 18: 2, 26: 3}[connectivity]) \
        if lab.ndim == 3 else np.ones((3,) * lab.ndim, bool)
    out = np.zeros(lab.shape, dtype=np.uint32)
    if lab.dtype == bool:
        ids = np.array([True]) if lab.any() else np.array([], bool)
    else:
        ids = np.unique(lab)
        ids = ids[ids != 0]
    if ids.size == 0:
        return out, 0
    if ids.size == 1:
        n = ndimage.label(lab != 0, structure=structure, output=out)
        return out, int(n)
    compact = np.searchsorted(ids, lab)  # background -> 0 only when 0 < ids[0]; fixed below
    compact = np.where(lab != 0, compact + 1, 0)
    n = 0
    for k, sl in enumerate(ndimage.find_objects(compact), start=1):
        if sl is None:
            continue
        sub = compact[sl] == k
        part, m = ndimage.label(sub, structure=structure)
        view = out[sl]
        view[sub] = part[sub] + np.uint32(n)
        n += int(m)
    return out, n


def match_instances(truth_index: np.ndarray, pred_index: np.ndarray, iou: np.ndarray,
                    cost_scale: int = 1_000_000) -> np.ndarray:
    """Minimum-cost 1:1 matching over overlapping pairs.

    Inputs are parallel 1-D arrays over the pairs with IoU > 0: truth instance index, prediction
    instance index, IoU. Matching a pair costs int((1 - IoU) * cost_scale); leaving a truth
    instance unmatched costs cost_scale + 1. Solved exactly with ``linear_sum_assignment`` per
    connected component of the bipartite overlap graph. Returns an int64 (k, 2) array of
    matched (truth index, prediction index) pairs.
    """
    truth_index = np.asarray(truth_index, dtype=np.int64)
    pred_index = np.asarray(pred_index, dtype=np.int64)
    iou = np.asarray(iou, dtype=np.float64)
    keep = iou > 0
    truth_index, pred_index, iou = truth_index[keep], pred_index[keep], iou[keep]
    if truth_index.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    gu, gi = np.unique(truth_index, return_inverse=True)
    pu, pi = np.unique(pred_index, return_inverse=True)
    ng, npr = gu.size, pu.size
    graph = coo_matrix((np.ones(gi.size), (gi, pi + ng)), shape=(ng + npr, ng + npr))
    _, comp = connected_components(graph, directed=False)
    cost = ((1.0 - iou) * cost_scale).astype(np.int64)
    unmatched = cost_scale + 1
    forbidden = 4 * cost_scale + 4
    order = np.argsort(comp[gi], kind="stable")
    edge_comp = comp[gi][order]
    starts = np.flatnonzero(np.r_[True, edge_comp[1:] != edge_comp[:-1]])
    ends = np.r_[starts[1:], edge_comp.size]
    matches = []
    for s, e in zip(starts, ends):
        sel = order[s:e]
        rows_u, r = np.unique(gi[sel], return_inverse=True)
        cols_u, c = np.unique(pi[sel], return_inverse=True)
        nr, nc = rows_u.size, cols_u.size
        if nr == 1 and nc == 1:
            matches.append((gu[rows_u[0]], pu[cols_u[0]]))
            continue
        rr, cc = _assign(r, c, cost[sel], nr, nc, unmatched, forbidden)
        for a, b in zip(rr, cc):
            if b < nc:
                matches.append((gu[rows_u[a]], pu[cols_u[b]]))
    return np.asarray(matches, dtype=np.int64).reshape(-1, 2)


_DENSE_LIMIT = 1 << 24  # cells of one component's dense cost matrix


def _assign(r, c, cost, nr: int, nc: int, unmatched: int, forbidden: int):
    """Rows r (truth) and columns c (prediction) with integer costs, plus one "unmatched" column
    per row at cost ``unmatched``; returns (rows, columns) of the optimal full row assignment
    (columns >= nc mean unmatched). Dense Hungarian when small, sparse matching otherwise."""
    if nr * (nc + nr) <= _DENSE_LIMIT:
        m = np.full((nr, nc + nr), forbidden, dtype=np.int64)
        m[r, c] = cost
        m[np.arange(nr), nc + np.arange(nr)] = unmatched
        return linear_sum_assignment(m)
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    rows = np.concatenate([r, np.arange(nr)])
    cols = np.concatenate([c, nc + np.arange(nr)])
    w = np.concatenate([cost, np.full(nr, unmatched)]).astype(np.float64) + 1.0  # keep > 0
    return min_weight_full_bipartite_matching(csr_matrix((w, (rows, cols)), shape=(nr, nc + nr)))


def hausdorff_distance_nm(a: np.ndarray, b: np.ndarray, voxel_size_nm: Sequence[float],
                          cap_nm: float = math.inf) -> float:
    """Symmetric Hausdorff distance in nm between boolean masks ``a`` and ``b`` (z, y, x).

    0 when both are empty, ``cap_nm`` when one is; otherwise the larger of the two directed
    maxima of Euclidean distance transforms taken with the voxel spacing, capped at ``cap_nm``.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    na, nb = bool(a.any()), bool(b.any())
    if not na and not nb:
        return 0.0
    if not na or not nb:
        return float(cap_nm)
    sl = _bbox_union(a, b)
    a, b = a[sl], b[sl]
    vs = _vs3(voxel_size_nm)
    fwd = ndimage.distance_transform_edt(~b, sampling=vs)[a].max(initial=0.0)
    bwd = ndimage.distance_transform_edt(~a, sampling=vs)[b].max(initial=0.0)
    return float(min(max(fwd, bwd), cap_nm))


def _bbox_union(a: np.ndarray, b: np.ndarray) -> Tuple[slice, ...]:
    out = []
    for ax in range(a.ndim):
        other = tuple(i for i in range(a.ndim) if i != ax)
        hit = np.flatnonzero(a.any(axis=other) | b.any(axis=other))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def instance_counts(truth: np.ndarray, pred: np.ndarray, voxel_size_nm: Sequence[float],
                    mask: Optional[np.ndarray] = None,
                    config: ScoringConfig = ScoringConfig()) -> Counts:
    """Instance counts of one in-memory crop (see :func:`score_crop_class` for streaming)."""
    return score_crop_class(truth, pred, voxel_size_nm, INSTANCE, mask=mask, config=config)


def missing_counts(truth, kind: str, config: ScoringConfig = ScoringConfig(),
                   mask=None) -> Counts:
    """Counts of a class the prediction lacks: instance -> every truth object a false negative
    with normalised distance 0 (raw distance: the cap); semantic -> every voxel a false negative.
    ``truth``: (z, y, x) array-like, read in slabs."""
    if kind == SEMANTIC:
        return Counts(SEMANTIC, 0, 0, int(np.prod(truth.shape)), status="missing")
    ids: set = set()
    for z0, z1 in _slabs(truth.shape, config.max_voxels_in_memory):
        t = _masked(truth, mask, z0, z1)
        u = np.unique(t)
        ids.update(u[u != 0].tolist())
    n = len(ids)
    return Counts(INSTANCE, 0, 0, n, 0.0, 0.0, n, status="missing")


# ---------------------------------------------------------------------------------------------
# one crop x class, streamed in z slabs


def _slabs(shape: Sequence[int], budget: int):
    plane = max(1, int(np.prod(shape[1:])))
    depth = max(1, int(budget) // plane)
    for z0 in range(0, int(shape[0]), depth):
        yield z0, min(int(shape[0]), z0 + depth)


def _read(array, z0: int, z1: int) -> np.ndarray:
    return np.asarray(array[z0:z1])


def _masked(array, mask, z0: int, z1: int) -> np.ndarray:
    data = _read(array, z0, z1)
    if mask is not None:
        data = np.where(_read(mask, z0, z1) > 0, data, 0)
    return data


def _progress(total: int, desc: str, config: ScoringConfig):
    from tqdm.auto import tqdm

    disable = None if config.progress is None else not config.progress
    return tqdm(total=total, desc=desc, disable=disable, leave=False)


def score_crop_class(truth, pred, voxel_size_nm: Sequence[float], kind: str, mask=None,
                     config: ScoringConfig = ScoringConfig(), desc: str = "") -> Counts:
    """Counts of one crop x class. ``truth``, ``pred`` and ``mask`` are (z, y, x) array-likes of
    one shape on one grid (numpy, zarr, :class:`cellmap.submission.OnGrid`), read in z slabs of at
    most ``config.max_voxels_in_memory`` voxels; ``voxel_size_nm`` (z, y, x) in nm;
    ``kind`` "semantic" or "instance"."""
    vs = _vs3(voxel_size_nm)
    shape = tuple(int(s) for s in truth.shape)
    if tuple(int(s) for s in pred.shape) != shape:
        raise EvaluationError(f"{desc or 'crop'}: truth shape {shape} != prediction shape "
                              f"{tuple(pred.shape)}; put the prediction on the truth grid first")
    if mask is not None and tuple(int(s) for s in mask.shape) != shape:
        raise EvaluationError(f"{desc or 'crop'}: mask shape {tuple(mask.shape)} != {shape}")
    if kind == SEMANTIC:
        total = Counts(SEMANTIC)
        slabs = list(_slabs(shape, config.max_voxels_in_memory))
        with _progress(len(slabs), desc or "semantic", config) as bar:
            for z0, z1 in slabs:
                c = semantic_counts(_read(truth, z0, z1), _read(pred, z0, z1),
                                    None if mask is None else _read(mask, z0, z1))
                total = replace(total + c, status="scored")
                bar.update(1)
        return total
    if kind != INSTANCE:
        raise EvaluationError(f"kind must be 'semantic' or 'instance', got {kind!r}")
    return _InstanceScorer(truth, pred, mask, vs, shape, config, desc).run()


def _reduce_boxes(values: List[np.ndarray], sizes: List[np.ndarray], lo: List[np.ndarray],
                  hi: List[np.ndarray]):
    """Group per-slab (value, size, bbox low, bbox high) records by value."""
    if not values:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64)
    v = np.concatenate(values)
    order = np.argsort(v, kind="stable")
    v = v[order]
    uniq, start = np.unique(v, return_index=True)
    return (uniq, np.add.reduceat(np.concatenate(sizes)[order], start),
            np.minimum.reduceat(np.concatenate(lo)[order], start, axis=0),
            np.maximum.reduceat(np.concatenate(hi)[order], start, axis=0))


def _compact(t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(values, compact labels) of a truth slab: label k (1..) stands for values[k - 1], 0 for
    background. Small IDs are their own labels (no sort); large ones are ranked."""
    tmax = int(t.max()) if t.size else 0
    if t.dtype.kind in "iu" and (t.size == 0 or int(t.min()) >= 0) and tmax <= 1 << 16:
        same = t if t.dtype != np.uint64 else t.astype(np.intp)
        return np.arange(1, tmax + 1, dtype=np.int64), same
    u, inv = np.unique(t, return_inverse=True)
    inv = inv.reshape(t.shape)
    if u.size and u[0] == 0:
        return u[1:].astype(np.int64), inv
    return u.astype(np.int64), inv + 1


def _boxes_of(compact: np.ndarray, n: int, z0: int):
    """Sizes and (low, high-exclusive) boxes of labels 1..n of a compact slab, z offset z0."""
    sizes = np.bincount(compact.ravel(), minlength=n + 1)[1:n + 1]
    lo = np.zeros((n, 3), np.int64)
    hi = np.zeros((n, 3), np.int64)
    for k, sl in enumerate(ndimage.find_objects(compact, max_label=n)):
        if sl is not None:
            lo[k] = [sl[0].start + z0, sl[1].start, sl[2].start]
            hi[k] = [sl[0].stop + z0, sl[1].stop, sl[2].stop]
    return sizes, lo, hi


class _LabelStore:
    """The relabelled prediction (uint32, (z, y, x)): an array when the crop is one slab, else a
    temporary file mapped only while a slab is written or a box is read, so the pages touched
    do not stay in this process's resident memory."""

    def __init__(self, shape, on_disk: bool, workdir: Optional[str]):
        self.shape = tuple(shape)
        self.path = None
        if not on_disk:
            self.data = np.zeros(self.shape, np.uint32)
            return
        fd, self.path = tempfile.mkstemp(prefix="cellmap-eval-", suffix=".u32", dir=workdir)
        os.close(fd)
        with open(self.path, "r+b") as f:
            f.truncate(int(np.prod(self.shape)) * 4)

    def write(self, z0: int, slab: np.ndarray) -> None:
        if self.path is None:
            self.data[z0:z0 + slab.shape[0]] = slab
            return
        plane = int(np.prod(self.shape[1:]))
        with open(self.path, "r+b") as f:
            f.seek(z0 * plane * 4)
            f.write(np.ascontiguousarray(slab, dtype=np.uint32).tobytes())

    def read(self, sl: Tuple[slice, ...]) -> np.ndarray:
        if self.path is None:
            return self.data[sl]
        m = np.memmap(self.path, dtype=np.uint32, mode="r", shape=self.shape)
        try:
            return np.array(m[sl])
        finally:
            del m

    def close(self) -> None:
        if self.path is not None and os.path.exists(self.path):
            os.unlink(self.path)


class _InstanceScorer:
    """One pass over z slabs gathers sizes, boxes and overlaps; then matching and distances."""

    def __init__(self, truth, pred, mask, vs, shape, config: ScoringConfig, desc: str):
        self.truth, self.pred, self.mask = truth, pred, mask
        self.vs, self.shape, self.config, self.desc = vs, shape, config, desc or "instance"
        self.cap = hausdorff_cap_nm(vs, shape)

    def run(self) -> Counts:
        slabs = list(_slabs(self.shape, self.config.max_voxels_in_memory))
        store = _LabelStore(self.shape, len(slabs) > 1, self.config.workdir)
        try:
            return self._run(store, slabs)
        finally:
            store.close()

    def _run(self, store, slabs) -> Counts:
        gt_v, gt_s, gt_lo, gt_hi = [], [], [], []
        pr_s, pr_lo, pr_hi = [], [], []
        pair_g, pair_p, pair_n, unions = [], [], [], []
        next_id = 0
        prev = None  # (labels, original values) of the previous slab's last plane
        with _progress(len(slabs), f"{self.desc}: components", self.config) as bar:
            for z0, z1 in slabs:
                t = _masked(self.truth, self.mask, z0, z1)
                p = _masked(self.pred, self.mask, z0, z1)
                if t.shape != p.shape:
                    raise EvaluationError(f"{self.desc}: slab shapes differ {t.shape} {p.shape}")
                # truth records: u[k - 1] is the value of compact truth label k (0 = background)
                u, inv = _compact(t)
                if u.size:
                    s, lo, hi = _boxes_of(inv, u.size, z0)
                    keep = s > 0
                    gt_v.append(u[keep]), gt_s.append(s[keep])
                    gt_lo.append(lo[keep]), gt_hi.append(hi[keep])
                # prediction components, numbered after the previous slabs'
                lab, n = label_components(p)
                if n:
                    s, lo, hi = _boxes_of(lab, n, z0)
                    pr_s.append(s), pr_lo.append(lo), pr_hi.append(hi)
                    fg = (lab > 0) & (inv > 0) if u.size else None
                    if fg is not None and fg.any():
                        key = (inv[fg].astype(np.int64) - 1) * (n + 1) + lab[fg].astype(np.int64)
                        k, cnt = np.unique(key, return_counts=True)
                        pair_g.append(u[k // (n + 1)].astype(np.int64))
                        pair_p.append(k % (n + 1) + next_id)
                        pair_n.append(cnt)
                    lab[lab > 0] += np.uint32(next_id)
                if prev is not None and n:
                    unions.append(_plane_unions(prev[0], prev[1], lab[0], p[0]))
                store.write(z0, lab)
                prev = (lab[-1].copy(), p[-1].copy())
                next_id += n
                bar.update(1)
        return self._finish(store, next_id, _reduce_boxes(gt_v, gt_s, gt_lo, gt_hi),
                            (pr_s, pr_lo, pr_hi), pair_g, pair_p, pair_n, unions)

    def _finish(self, store, n_prov, gt, pr, pair_g, pair_p, pair_n, unions) -> Counts:
        gt_ids, gt_sizes, gt_lo, gt_hi = gt
        n_g = int(gt_ids.size)
        # merge components across slab boundaries
        if unions:
            ab = np.concatenate(unions, axis=0)
        else:
            ab = np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(ab.shape[0]), (ab[:, 0], ab[:, 1])),
                           shape=(n_prov + 1, n_prov + 1))
        _, comp = connected_components(graph, directed=False)
        final = np.zeros(n_prov + 1, np.int64)
        if n_prov:
            _, first = np.unique(comp[1:], return_index=True)
            rank = np.empty(comp.max() + 1, np.int64)
            rank[comp[1:][np.sort(first)]] = np.arange(1, first.size + 1)
            final[1:] = rank[comp[1:]]
        n_p = int(final.max()) if n_prov else 0
        if n_prov:
            _, pr_sizes, pr_lo, pr_hi = _reduce_boxes(
                [final[1:]], [np.concatenate(pr[0])], [np.concatenate(pr[1])],
                [np.concatenate(pr[2])])
        status = "scored"
        if n_g == 0 and n_p == 0:
            return Counts(INSTANCE)
        matched = np.zeros((0, 2), np.int64)
        if n_g and n_p:
            if n_p / n_g > ratio_cutoff(n_g, self.config):
                return Counts(INSTANCE, status="skipped_too_many_instances")
            if pair_g:
                g_idx = np.searchsorted(gt_ids, np.concatenate(pair_g))
                p_idx = final[np.concatenate(pair_p)] - 1
                key = g_idx * n_p + p_idx
                k, start = np.unique(key, return_inverse=True)
                inter = np.bincount(start, weights=np.concatenate(pair_n).astype(np.float64))
                if k.size > self.config.max_overlap_edges:
                    return Counts(INSTANCE, status="skipped_too_many_overlaps")
                gi, pi = k // n_p, k % n_p
                iou = inter / (gt_sizes[gi] + pr_sizes[pi] - inter)
                matched = match_instances(gi, pi, iou, self.config.cost_scale)
        dists = np.full(n_g + n_p - matched.shape[0], self.cap, dtype=np.float64)
        if matched.shape[0]:
            lo = np.minimum(gt_lo[matched[:, 0]], pr_lo[matched[:, 1]])
            hi = np.maximum(gt_hi[matched[:, 0]], pr_hi[matched[:, 1]])
            window = _Window(self, store, final.astype(np.uint32))
            with _progress(matched.shape[0], f"{self.desc}: Hausdorff", self.config) as bar:
                for k in np.argsort(lo[:, 0], kind="stable"):  # z order: windows are reused
                    gi, pi = matched[k]
                    t, p = window.box(lo[k], hi[k])
                    dists[k] = hausdorff_distance_nm(t == gt_ids[gi], p == pi + 1, self.vs, self.cap)
                    bar.update(1)
        tp = int(matched.shape[0])
        return Counts(INSTANCE, tp, n_p - tp, n_g - tp, float(dists.sum()),
                      float(normalized_hausdorff(dists, self.vs).sum()), int(dists.size), status)


class _Window:
    """Whole (y, x) planes of truth (masked) and final prediction labels for a z range, read
    once and reused for every box inside it (boxes come in increasing z)."""

    def __init__(self, scorer: "_InstanceScorer", store: "_LabelStore", final: np.ndarray):
        self.s, self.store, self.final = scorer, store, final
        self.depth = max(1, scorer.config.max_voxels_in_memory
                         // max(1, scorer.shape[1] * scorer.shape[2]))
        self.z0 = self.z1 = 0
        self.t = self.p = None

    def box(self, lo, hi) -> Tuple[np.ndarray, np.ndarray]:
        z0, z1 = int(lo[0]), int(hi[0])
        if self.t is None or z0 < self.z0 or z1 > self.z1:
            self.t = self.p = None  # release before reading the next window
            self.z0, self.z1 = z0, min(self.s.shape[0], max(z1, z0 + self.depth))
            self.t = _masked(self.s.truth, self.s.mask, self.z0, self.z1)
            self.p = self.final[self.store.read((slice(self.z0, self.z1),))]
        sl = (slice(z0 - self.z0, z1 - self.z0), slice(int(lo[1]), int(hi[1])),
              slice(int(lo[2]), int(hi[2])))
        return self.t[sl], self.p[sl]


def _plane_unions(la: np.ndarray, va: np.ndarray, lb: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """Label pairs joined across two adjacent z planes (26-connectivity, same original value)."""
    ny, nx = la.shape
    out = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            ya, yb = slice(max(0, -dy), ny - max(0, dy)), slice(max(0, dy), ny - max(0, -dy))
            xa, xb = slice(max(0, -dx), nx - max(0, dx)), slice(max(0, dx), nx - max(0, -dx))
            a, b = la[ya, xa], lb[yb, xb]
            same = (a > 0) & (b > 0) & (va[ya, xa] == vb[yb, xb])
            if same.any():
                out.append(np.stack([a[same], b[same]], axis=1).astype(np.int64))
    if not out:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(out), axis=0)


# ---------------------------------------------------------------------------------------------
# pooling, hierarchies, report


def aggregate(scores: Iterable[CropClassScore], notes: Sequence[str] = ()) -> Scores:
    """Pool counts per class; instance score = mean per-class combined, semantic score = mean
    per-class IoU, overall = sqrt(instance * semantic) (0 when either kind is absent)."""
    scores = list(scores)
    classes: Dict[str, Counts] = {}
    for s in scores:
        c = s.counts
        classes[s.class_name] = c if s.class_name not in classes else classes[s.class_name] + c
    classes = {k: replace(v, status="pooled") for k, v in classes.items()}
    inst = [c.score for c in classes.values() if c.kind == INSTANCE]
    sem = [c.score for c in classes.values() if c.kind == SEMANTIC]
    i = float(np.mean(inst)) if inst else 0.0
    s_ = float(np.mean(sem)) if sem else 0.0
    notes = list(notes)
    for kind, vals in ((INSTANCE, inst), (SEMANTIC, sem)):
        if classes and not vals:
            notes.append(f"no {kind} class was scored: its mean counts as 0, so the overall "
                         "score is 0 (the challenge's rule)")
    return Scores(scores, classes, i, s_, math.sqrt(i * s_), notes)


def instance_class_names(instance_classes=None) -> frozenset:
    """The instance classes: ``instance_classes`` when given, else the catalogue's
    (:mod:`cellmap.classes`), else :data:`INSTANCE_CLASSES`."""
    if instance_classes is not None:
        return frozenset(instance_classes)
    try:  # the catalogue, when it is there
        from cellmap import classes as _classes  # noqa: WPS433

        names = getattr(_classes, "INSTANCE_CLASSES", None)
        if names is None and hasattr(_classes, "instance_classes"):
            names = _classes.instance_classes()
        if names:
            return frozenset(names)
    except ImportError:
        pass
    return frozenset(INSTANCE_CLASSES)


def evaluate_hierarchies(truth, prediction, classes: Optional[Sequence[str]] = None,
                         crops: Optional[Sequence] = None, instance_classes=None,
                         config: ScoringConfig = ScoringConfig()) -> Scores:
    """Score ``prediction/crop<ID>/<class>`` against ``truth/crop<ID>/<class>``.

    ``truth``, ``prediction``: paths of zarr hierarchies (``crop<ID>`` groups holding single-scale
    arrays with ``voxel_size`` and ``translation`` attributes, (z, y, x) in nm, or OME-NGFF
    multiscale groups, of which s0 is used); ``truth`` may also be a list of hierarchies or a
    CellMap ``datasplit.csv`` (:func:`cellmap.submission.read_truth`). The prediction is read on the truth grid (nearest
    voxel centre, zero outside). ``classes``: classes to score; default every class that appears
    anywhere in the prediction; a listed class that a truth crop holds but the prediction does
    not is scored as missing. ``crops``: crop names or numbers (default all truth crops).
    ``instance_classes``: default :mod:`cellmap.classes`' instance classes, else
    :data:`INSTANCE_CLASSES`.
    """
    from cellmap.submission import OnGrid, read_hierarchy, read_truth  # (submission has no scoring)

    t_h = read_truth(truth)
    p_h = read_hierarchy(prediction)
    inst = instance_class_names(instance_classes)
    if crops is not None:
        want = {_crop_name(c) for c in crops}
        unknown = sorted(want - set(t_h))
        if unknown:
            raise EvaluationError(f"{truth}: no crop {', '.join(unknown)} in the truth "
                                  f"(have {', '.join(sorted(t_h)) or 'none'})")
        t_h = {k: v for k, v in t_h.items() if k in want}
    if classes is None:
        wanted = sorted({c for crop in p_h.values() for c in crop if not c.endswith("_mask")})
    else:
        wanted = list(classes)
    notes = []
    extra = sorted(set(p_h) - set(t_h))
    if extra:
        notes.append(f"prediction crops without truth (not scored): {', '.join(extra)}")
    results: List[CropClassScore] = []
    jobs = [(c, n) for c in sorted(t_h, key=_crop_sort_key) for n in wanted if n in t_h[c]]
    if not jobs:
        raise EvaluationError(
            f"nothing to score: truth {truth} crops {sorted(t_h)} and classes {wanted}; "
            "check that prediction and truth use the same crop<ID>/<class> names")
    skipped = sorted({n for n in wanted if not any(n in t_h[c] for c in t_h)})
    if skipped:
        notes.append(f"classes without truth in any crop (not scored): {', '.join(skipped)}")
    with _progress(len(jobs), "crops x classes", config) as bar:
        for crop, name in jobs:
            t = t_h[crop][name]
            mask = t_h[crop].get(f"{name}_mask")
            kind = INSTANCE if name in inst else SEMANTIC
            desc = f"{crop}/{name}"
            if mask is not None and tuple(mask.grid.shape) != tuple(t.grid.shape):
                raise EvaluationError(f"{truth}/{desc}_mask: shape {mask.grid.shape} differs "
                                      f"from the truth's {t.grid.shape}")
            m = None if mask is None else mask.array
            p = p_h.get(crop, {}).get(name)
            if p is None:
                counts = missing_counts(t.array, kind, config, m)
            else:
                if t.grid.intersection(p.grid).is_empty:
                    notes.append(f"{desc}: the prediction ({p.grid.describe()}) does not overlap "
                                 f"the truth ({t.grid.describe()}); scored as empty. Check its "
                                 "voxel_size/translation (nm, z/y/x)")
                counts = score_crop_class(t.array, OnGrid(p.array, p.grid, t.grid),
                                          t.grid.voxel_size_nm, kind, mask=m, config=config,
                                          desc=desc)
            results.append(CropClassScore(crop, name, counts, int(np.prod(t.grid.shape)),
                                          tuple(t.grid.voxel_size_nm)))
            bar.update(1)
    return aggregate(results, notes)


def _crop_name(crop) -> str:
    s = str(crop)
    return s if s.startswith("crop") else f"crop{int(s)}"


def _crop_sort_key(name: str):
    digits = name[4:]
    return (0, int(digits), name) if digits.isdigit() else (1, 0, name)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def write_report(scores: Scores, out_dir, title: str = "CellMap scores") -> Dict[str, Path]:
    """Write ``scores.csv``, ``scores.md`` and ``scores.png`` (per-class bar chart) atomically
    into ``out_dir``; returns their paths. The PNG needs matplotlib (skipped without it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = scores.rows()
    paths = {}
    lines = [",".join(_COLUMNS)]
    for r in rows:
        lines.append(",".join(_csv_cell(r[c]) for c in _COLUMNS))
    paths["csv"] = write_text_atomic(out / "scores.csv", "\n".join(lines) + "\n")
    md = [f"# {title}", "",
          f"Overall score **{scores.overall_score:.4f}** = sqrt(instance {scores.instance_score:.4f}"
          f" x semantic {scores.semantic_score:.4f}).", "",
          "## Per class (pooled over crops)", "",
          "| class | kind | score | IoU | Dice | F1 | Hausdorff (nm) | norm. Hausdorff | TP | FP | FN |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["level"] == "class":
            md.append("| " + " | ".join(_fmt(r[c]) for c in (
                "class", "kind", "score", "iou", "dice", "f1", "hausdorff", "hausdorff_norm",
                "tp", "fp", "fn")) + " |")
    md += ["", "## Per crop", "",
           "| crop | class | kind | score | IoU | Dice | F1 | Hausdorff (nm) | status |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["level"] == "crop":
            md.append("| " + " | ".join(_fmt(r[c]) for c in (
                "crop", "class", "kind", "score", "iou", "dice", "f1", "hausdorff", "status"))
                + " |")
    if scores.notes:
        md += ["", "## Notes", ""] + [f"- {n}" for n in scores.notes]
    md += ["", "Scoring: CellMap toolbox HEAD rules (pooled per class); see `cellmap/evaluate.py`.",
           "", "![per-class scores](scores.png)", ""]
    paths["md"] = write_text_atomic(out / "scores.md", "\n".join(md))
    png = _bar_chart(scores, out / "scores.png", title)
    if png is not None:
        paths["png"] = png
    return paths


def _csv_cell(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    s = str(v)
    return f'"{s}"' if "," in s else s


def _bar_chart(scores: Scores, path: Path, title: str) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = sorted(scores.classes)
    vals = [scores.classes[n].score for n in names]
    colors = ["tab:orange" if scores.classes[n].kind == INSTANCE else "tab:blue" for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), vals, color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:blue", label="semantic: IoU"),
                       Patch(color="tab:orange", label="instance: sqrt(F1 x norm. Hausdorff)")],
              fontsize=8, loc="upper right")
    ax.set_title(f"{title}: overall {scores.overall_score:.3f}")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
