"""Data check of converted crops before any GPU time: blank/constant EM, labels on empty EM, missing raw, no annotation, size outliers.

Works on the per-crop statistics the converter gathers while streaming (:class:`CropStats`),
so a ``--dry_run`` checks everything without writing a NIfTI file. Each problem becomes a
:class:`Flag` with a code, a sentence naming the crop and what was measured, and the fix.
Flagged crops are excluded from the datalist unless ``--keep_flagged``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "CropStats",
    "Flag",
    "CheckThresholds",
    "FLAG_CODES",
    "fetch_command",
    "check_crop",
    "size_outliers",
]

FLAG_CODES = ("blank_em", "constant_em", "labels_on_empty_em", "raw_missing", "mostly_outside_raw",
              "no_annotated_class", "size_outlier")


@dataclass
class CropStats:
    """Streaming statistics of one converted crop on its output grid (counts are voxels).

    ``em_*`` cover voxels with raw data (inside raw, chunk present); the EM standard deviation
    is estimated on every 2nd voxel per axis (``em_sample_*``), everything else is exact;
    ``labelled_*`` cover voxels with a class value (1..N); ``value_counts`` maps label value ->
    voxels (0 and the ignore value included). Merge slab statistics with :meth:`merge`.
    """

    n_voxels: int = 0
    em_valid: int = 0
    em_sum: float = 0.0
    em_sumsq: float = 0.0
    em_min: int = 255
    em_max: int = 0
    em_zero: int = 0
    em_sample: int = 0
    em_sample_sum: float = 0.0
    labelled: int = 0
    labelled_em_zero: int = 0
    outside_raw: int = 0
    missing_raw: int = 0
    value_counts: Dict[int, int] = field(default_factory=dict)

    @classmethod
    def of_slab(cls, em: np.ndarray, valid: Optional[np.ndarray], labels: Optional[np.ndarray],
                outside: Optional[np.ndarray], missing: Optional[np.ndarray], ignore_value: int,
                value_counts: Optional[Dict[int, int]] = None) -> "CropStats":
        """Statistics of one (z, y, x) slab: ``em`` uint8, ``valid``/``outside``/``missing`` bool
        (None: all valid / none outside / none missing), ``labels`` integer label values (or None
        for image-only crops) and, when the caller has them, their ``value_counts``."""
        s = cls(n_voxels=int(em.size), outside_raw=0 if outside is None else int(np.count_nonzero(outside)),
                missing_raw=0 if missing is None else int(np.count_nonzero(missing)))
        all_valid = s.outside_raw == 0 and s.missing_raw == 0
        v = em if all_valid else em[valid]
        s.em_valid = int(v.size)
        if v.size:
            s.em_sum = float(v.sum(dtype=np.uint64))
            s.em_min, s.em_max = int(v.min()), int(v.max())
            s.em_zero = int(v.size - np.count_nonzero(v))
            sample = (em[::2, ::2, ::2] if all_valid else em[::2, ::2, ::2][valid[::2, ::2, ::2]]).astype(np.uint32)
            s.em_sample = int(sample.size)
            s.em_sample_sum = float(sample.sum(dtype=np.uint64))
            s.em_sumsq = float(np.square(sample, out=sample).sum(dtype=np.uint64))
        if labels is not None:
            if value_counts is None:
                counts = np.bincount(labels.ravel())
                value_counts = {int(i): int(c) for i, c in enumerate(counts) if c}
            s.value_counts = dict(value_counts)
            s.labelled = int(sum(c for v, c in s.value_counts.items() if v not in (0, ignore_value)))
            if s.em_zero or not all_valid:
                under_zero = np.bincount(labels[em == 0].ravel())
                s.labelled_em_zero = int(sum(c for v, c in enumerate(under_zero) if c and v not in (0, ignore_value)))
        return s

    def merge(self, other: "CropStats") -> "CropStats":
        """Sum of two slabs' statistics."""
        vc = dict(self.value_counts)
        for k, c in other.value_counts.items():
            vc[k] = vc.get(k, 0) + c
        return CropStats(
            n_voxels=self.n_voxels + other.n_voxels, em_valid=self.em_valid + other.em_valid,
            em_sum=self.em_sum + other.em_sum, em_sumsq=self.em_sumsq + other.em_sumsq,
            em_min=min(self.em_min, other.em_min), em_max=max(self.em_max, other.em_max),
            em_zero=self.em_zero + other.em_zero, em_sample=self.em_sample + other.em_sample,
            em_sample_sum=self.em_sample_sum + other.em_sample_sum, labelled=self.labelled + other.labelled,
            labelled_em_zero=self.labelled_em_zero + other.labelled_em_zero,
            outside_raw=self.outside_raw + other.outside_raw, missing_raw=self.missing_raw + other.missing_raw,
            value_counts=vc)

    @property
    def em_mean(self) -> float:
        return self.em_sum / self.em_valid if self.em_valid else float("nan")

    @property
    def em_std(self) -> float:
        """EM standard deviation, estimated on the 1/8 sample (``em_sumsq`` is the sample's)."""
        if not self.em_sample:
            return float("nan")
        mean = self.em_sample_sum / self.em_sample
        var = self.em_sumsq / self.em_sample - mean ** 2
        return math.sqrt(max(var, 0.0))

    @property
    def labelled_em_zero_fraction(self) -> float:
        return self.labelled_em_zero / self.labelled if self.labelled else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["value_counts"] = {str(k): v for k, v in sorted(self.value_counts.items())}
        d.update(em_mean=_r(self.em_mean), em_std=_r(self.em_std),
                 labelled_em_zero_fraction=_r(self.labelled_em_zero_fraction),
                 outside_raw_fraction=_r(self.outside_raw / self.n_voxels if self.n_voxels else 0.0),
                 missing_raw_fraction=_r(self.missing_raw / self.n_voxels if self.n_voxels else 0.0))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CropStats":
        keep = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        keep["value_counts"] = {int(k): int(v) for k, v in d.get("value_counts", {}).items()}
        return cls(**keep)


def _r(x: float) -> Optional[float]:
    return None if x != x else round(float(x), 6)


@dataclass(frozen=True)
class Flag:
    """One data-check finding: ``code`` (one of :data:`FLAG_CODES`), ``message``, ``fix``."""

    code: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class CheckThresholds:
    """Limits of the data check (documented in the README ``convert`` section).

    constant_std: EM std (grey levels) below which EM counts as constant;
    empty_em_fraction: fraction of labelled voxels on EM == 0 above which labels sit on empty EM;
    outside_fraction: fraction of output voxels outside raw above which the crop is flagged;
    outlier_factor: a crop with more than this many times the median voxel count is an outlier;
    min_axis: a crop with fewer output voxels than this along any axis is an outlier.
    """

    constant_std: float = 1.0
    empty_em_fraction: float = 0.5
    outside_fraction: float = 0.5
    outlier_factor: float = 10.0
    min_axis: int = 4


def fetch_command(crop_ids: Sequence[str]) -> str:
    """The ``csc fetch-data`` line that downloads every EM level of the given crops."""
    nums = []
    for c in crop_ids:
        c = str(c)
        nums.append(c[4:] if c.startswith("crop") else c)
    return f'csc fetch-data --crops "{",".join(nums)}" --fetch-all-em-resolutions'


def check_crop(name: str, crop: str, stats: CropStats, annotated: Sequence[str],
               missing_chunk_fraction: float, has_labels: bool = True,
               thresholds: CheckThresholds = CheckThresholds(),
               complete_levels: Optional[Sequence[str]] = None) -> List[Flag]:
    """Every flag of one crop (``name`` like ``jrc_x/crop7``) from its statistics.

    ``complete_levels``: raw levels fully present locally for this crop (named in the fix of
    ``raw_missing`` as an alternative ``--scale``)."""
    t = thresholds
    flags: List[Flag] = []
    if missing_chunk_fraction > 0 or stats.missing_raw > 0:
        alt = (f"; or convert from a level that is complete locally: --scale {complete_levels[0]}"
               if complete_levels else "")
        flags.append(Flag("raw_missing",
                          f"{name}: {100 * missing_chunk_fraction:.1f}% of the raw chunks it reads are missing "
                          f"from the local store ({stats.missing_raw} output voxels set to ignore)",
                          f"download them: {fetch_command([crop])}{alt}"))
    if stats.em_valid > 0 and stats.em_max == 0:
        flags.append(Flag("blank_em", f"{name}: EM is blank (no non-zero raw voxel on the crop)",
                          f"check the raw path and scale, or fetch the EM: {fetch_command([crop])}"))
    elif stats.em_std < t.constant_std:
        flags.append(Flag("constant_em",
                          f"{name}: EM is constant (std {stats.em_std:.2f} < {t.constant_std} grey levels, "
                          f"values {stats.em_min}..{stats.em_max})",
                          "inspect the crop's EM; resin or fill value is not trainable"))
    if has_labels and stats.labelled and stats.labelled_em_zero_fraction > t.empty_em_fraction:
        flags.append(Flag("labels_on_empty_em",
                          f"{name}: {100 * stats.labelled_em_zero_fraction:.1f}% of labelled voxels lie on EM == 0",
                          f"labels and EM are misregistered or EM is missing; fetch it: {fetch_command([crop])}"))
    if stats.n_voxels and stats.outside_raw / stats.n_voxels > t.outside_fraction:
        flags.append(Flag("mostly_outside_raw",
                          f"{name}: {100 * stats.outside_raw / stats.n_voxels:.1f}% of the crop lies outside raw",
                          "check the raw translation of this dataset"))
    if has_labels and not annotated:
        flags.append(Flag("no_annotated_class", f"{name}: none of the chosen classes is annotated in this crop",
                          "choose --classes that this crop annotates, or leave it out"))
    return flags


def size_outliers(shapes: Dict[str, Sequence[int]], thresholds: CheckThresholds = CheckThresholds()) -> Dict[str, Flag]:
    """Size-outlier flags by crop key from output shapes (z, y, x): too large vs the median, or too thin."""
    t = thresholds
    out: Dict[str, Flag] = {}
    if not shapes:
        return out
    sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
    med = float(np.median(list(sizes.values())))
    for k, s in shapes.items():
        if len(sizes) >= 3 and sizes[k] > t.outlier_factor * med:
            out[k] = Flag("size_outlier",
                          f"{k}: {sizes[k]:,} voxels, {sizes[k] / med:.1f}x the median crop ({med:,.0f})",
                          "convert it alone at a coarser --target_spacing, or pass --keep_flagged")
        elif min(s) < t.min_axis:
            out[k] = Flag("size_outlier",
                          f"{k}: output shape {tuple(s)} has an axis shorter than {t.min_axis} voxels",
                          "use a finer --target_spacing, or pass --keep_flagged")
    return out
