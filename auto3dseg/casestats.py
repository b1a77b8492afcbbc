"""Per-case image/label statistics streamed from NIfTI in slabs, equal to MONAI DataAnalyzer's by-case numbers.

MONAI's DataAnalyzer loads a whole case as float32 (image and label, 8 B/voxel plus temporaries) and sorts it
for every percentile. EM is uint8, so every statistic DataAnalyzer reports (min, max, mean, population stdev,
lower median, linearly interpolated percentiles 0.5/10/90/99.5) follows exactly from a histogram. Here each case
is read in slabs along the last NIfTI axis through nibabel's array proxy and only histograms are kept, so memory
is bounded by the slab size, whatever the crop size.

The definitions reproduced (monai/auto3dseg/analyzer.py, monai 1.5-1.6):
- arrays are reoriented to RAS first (shape, spacing, cropped shape are reported in RAS axis order);
- ``image_stats#intensity`` is computed over ``CropForeground(x > 0)`` applied to a channel-less (x, y, z)
  array, so the first RAS axis is treated as the channel axis and never cropped;
- ``image_foreground_stats`` and ``label_stats#image_intensity`` are over voxels with label > 0 (an ignore
  value such as 255 included, as DataAnalyzer does); no foreground gives the stats of ``[0.0]``;
- ``label_stats#label[i]`` belongs to ``labels[i]`` (sorted unique values); ``foreground_percentage`` is the
  voxel fraction of that value in the whole case.

Integer images and labels with values in 0..65535 take the streamed path; anything else (float images, scaled
data) falls back to an exact in-memory computation with the same definitions. One deliberate difference:
DataAnalyzer casts labels to int16, so a uint16 label value >= 32768 (the uint16 ignore value 65535) comes out
wrapped (-1); here it stays 65535.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from auto3dseg.errors import Auto3DSegError

__all__ = ["CaseStatsError", "case_stats", "stats_from_histogram", "stats_from_values", "DEFAULT_SLAB_VOXELS"]

#: Voxels read per slab (image and label each): 2**23 voxels (32 planes of 512^2) bounds a worker's arrays to
#: about 50 MB whatever the crop size.
DEFAULT_SLAB_VOXELS = 2**23
_BINCOUNT_CHUNK = 2**20

_PERCENTILES = (0.5, 10.0, 90.0, 99.5)
_PERCENTILE_KEYS = ("percentile_00_5", "percentile_10_0", "percentile_90_0", "percentile_99_5")


class CaseStatsError(Auto3DSegError):
    """A case cannot be analysed (DataAnalyzer would silently drop it); the message names the file and the fix."""


def _stats_dict(vmin, vmax, mean, median, std, pcts) -> dict:
    """DataAnalyzer's SampleOperations report, keys in its order."""
    pcts = [float(p) for p in pcts]
    out = {
        "max": float(vmax),
        "mean": float(mean),
        "median": float(median),
        "min": float(vmin),
        "stdev": float(std),
        "percentile": pcts,
    }
    out.update(dict(zip(_PERCENTILE_KEYS, pcts)))
    return out


def stats_from_histogram(hist: np.ndarray, offset: int = 0) -> dict:
    """Exact DataAnalyzer intensity statistics from a histogram of integer values.

    Args:
        hist: counts; ``hist[i]`` = number of voxels with value ``i + offset``.
        offset: value of bin 0.

    Returns:
        ``{"max", "mean", "median", "min", "stdev", "percentile", "percentile_00_5", ...}``: mean and population
        stdev over all voxels, median = lower median (``torch.median``), percentiles linearly interpolated between
        order statistics (``numpy.percentile``/``torch.quantile`` default). An empty histogram gives the stats of
        ``[0.0]``, as DataAnalyzer's foreground fallback.
    """
    hist = np.asarray(hist, dtype=np.int64)
    n = int(hist.sum())
    if n == 0:
        return _stats_dict(0.0, 0.0, 0.0, 0.0, 0.0, [0.0] * len(_PERCENTILES))
    values = np.arange(hist.size, dtype=np.float64) + offset
    nz = np.flatnonzero(hist)
    vmin, vmax = values[nz[0]], values[nz[-1]]
    mean = float(np.dot(hist, values) / n)
    var = float(np.dot(hist, (values - mean) ** 2) / n)
    cum = np.cumsum(hist)

    def order_stat(k: int) -> float:  # k-th smallest value, 0-based
        return float(values[np.searchsorted(cum, k, side="right")])

    median = order_stat((n - 1) // 2)
    pcts = []
    for q in _PERCENTILES:
        pos = (n - 1) * q / 100.0
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        a, b = order_stat(lo), order_stat(hi)
        pcts.append(a + (b - a) * (pos - lo))
    return _stats_dict(vmin, vmax, mean, median, np.sqrt(var), pcts)


def stats_from_values(values: np.ndarray) -> dict:
    """The same statistics as :func:`stats_from_histogram` from an array of values (the in-memory fallback)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        v = np.zeros(1)
    s = np.sort(v)
    pcts = np.percentile(s, _PERCENTILES)
    return _stats_dict(s[0], s[-1], s.mean(), s[(s.size - 1) // 2], s.std(), pcts)


def _ras_layout(affine: np.ndarray):
    """(perm, spacing) where ``perm[i]`` is the RAS axis of array axis i; spacing in RAS axis order."""
    ornt = nib.orientations.io_orientation(affine)
    perm = [int(a) for a in ornt[:, 0]]
    col_norms = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for i, ax in enumerate(perm):
        spacing[ax] = float(col_norms[i])
    return perm, spacing


def _to_ras(values, perm):
    out = [0, 0, 0]
    for i, ax in enumerate(perm):
        out[ax] = int(values[i])
    return out


def _streamable(proxy) -> bool:
    dtype = np.dtype(proxy.dtype)
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    return dtype.kind == "u" and dtype.itemsize <= 2 and slope == 1.0 and inter == 0.0


def _extent(mask_1d: np.ndarray) -> int:
    nz = np.flatnonzero(mask_1d)
    return 0 if nz.size == 0 else int(nz[-1] - nz[0] + 1)


def case_stats(image_path: str, label_path: str | None, slab_voxels: int = DEFAULT_SLAB_VOXELS) -> dict:
    """DataAnalyzer's by-case statistics of one (image, label) NIfTI pair, streamed in slabs.

    Args:
        image_path: single-channel 3D NIfTI, array axes (x, y, z); the affine gives spacing (any unit, e.g. nm).
        label_path: integer label NIfTI on the same voxel grid, or None for image-only statistics.
        slab_voxels: voxels read at once per file; bounds memory.

    Returns:
        the ``stats_by_cases`` entry DataAnalyzer writes (``image_filepath``, ``label_filepath``,
        ``image_stats``, ``image_foreground_stats``, ``label_stats``); shapes and spacing in RAS axis order.

    Raises:
        CaseStatsError: unreadable file, not 3D, label grid differing from the image, or an all-zero image
            (DataAnalyzer drops such a case silently).
    """
    try:
        img = nib.load(image_path, keep_file_open=True)
        lab = nib.load(label_path, keep_file_open=True) if label_path else None
    except Exception as err:  # nibabel raises many types for bad files
        raise CaseStatsError(f"{image_path}: cannot be read as NIfTI ({err}); re-run the conversion") from err
    shape = tuple(int(s) for s in img.shape)
    if len(shape) != 3:
        raise CaseStatsError(f"{image_path}: expected a single-channel 3D image (x, y, z), found shape {shape}")
    if lab is not None and tuple(lab.shape) != shape:
        raise CaseStatsError(
            f"{label_path}: label shape {tuple(lab.shape)} differs from image shape {shape} ({image_path}); "
            "image and label must share one voxel grid, re-run the conversion"
        )
    perm, spacing = _ras_layout(img.affine)
    a0 = perm.index(0)  # the array axis DataAnalyzer's CropForeground treats as channels
    streamed = _streamable(img.dataobj) and (lab is None or _streamable(lab.dataobj))
    if streamed:
        counts = _stream_histograms(img, lab, shape, slab_voxels, a0)
    else:
        counts = _memory_values(img, lab, a0)
    proj, label_values = counts["proj"], counts["label_values"]
    extents = [shape[ax] if ax == a0 else _extent(proj[ax]) for ax in range(3)]
    if min(extents) == 0:
        raise CaseStatsError(
            f"{image_path}: the image has no voxel > 0, so DataAnalyzer would drop this case "
            "(empty foreground crop); check the raw data of this crop (missing chunks?) or remove it from the datalist"
        )
    total = int(np.prod(shape))
    if streamed:
        hist_img = counts["joint"].sum(axis=0)
        cropped = hist_img.copy()
        cropped[0] -= total - int(np.prod(extents))  # outside the box every voxel is 0 (unsigned, none > 0)
        image_intensity = stats_from_histogram(cropped)
    else:
        image_intensity = stats_from_values(counts["cropped_values"])

    report = {
        "image_filepath": os.fspath(image_path),
        "label_filepath": os.fspath(label_path) if label_path else "",
        "image_stats": {
            "shape": [_to_ras(shape, perm)],
            "channels": 1,
            "cropped_shape": [_to_ras(extents, perm)],
            "spacing": spacing,
            "sizemm": [float(a * b) for a, b in zip(_to_ras(shape, perm), spacing)],
            "intensity": [image_intensity],
        },
    }
    if lab is None:
        return report
    if streamed:
        joint = counts["joint"]
        fg = stats_from_histogram(joint[label_values > 0].sum(axis=0))
        per_label = [
            {
                "image_intensity": [stats_from_histogram(joint[i])],
                "foreground_percentage": float(joint[i].sum() / total),
            }
            for i in range(len(label_values))
        ]
    else:
        fg = stats_from_values(counts["fg_values"])
        per_label = [
            {"image_intensity": [stats_from_values(v)], "foreground_percentage": float(v.size / total)}
            for v in counts["label_values_list"]
        ]
    report["image_foreground_stats"] = {"intensity": [fg]}
    report["label_stats"] = {
        "labels": [int(v) for v in label_values],
        "image_intensity": [fg],
        "label": per_label,
    }
    return report


def _stream_histograms(img, lab, shape, slab_voxels, a0) -> dict:
    """One pass over slabs along the last axis: joint (label, intensity) histogram and > 0 projections."""
    nx, ny, nz = shape
    img_bins = 256 if np.dtype(img.dataobj.dtype).itemsize == 1 else 65536
    lab_dtype = np.dtype(lab.dataobj.dtype) if lab is not None else np.dtype(np.uint8)
    direct = img_bins == 256 and lab_dtype.itemsize == 1
    lab_bins = 256 if lab_dtype.itemsize == 1 else 65536
    step = max(1, int(slab_voxels) // max(1, nx * ny))
    joint = np.zeros((lab_bins, img_bins), dtype=np.int64) if direct else {}
    proj = [np.zeros(n, dtype=bool) for n in shape]
    other = [ax for ax in range(3) if ax != a0]
    for z0 in range(0, nz, step):
        z1 = min(nz, z0 + step)
        im = np.asarray(img.dataobj[:, :, z0:z1])
        lb = np.asarray(lab.dataobj[:, :, z0:z1]) if lab is not None else np.zeros(im.shape, np.uint8)
        flat = im.any(axis=a0)  # 2D over the two other axes (other[0] < other[1]); > 0 as images are unsigned
        proj[other[0]] |= flat.any(axis=1)
        if other[1] == 2:
            proj[2][z0:z1] |= flat.any(axis=0)
        else:
            proj[other[1]] |= flat.any(axis=0)
        if direct:  # joint bin = label * 256 + intensity, counted in chunks (bincount copies to int64)
            im_flat, lb_flat = im.ravel(order="F"), lb.ravel(order="F")
            for i in range(0, im_flat.size, _BINCOUNT_CHUNK):
                idx = lb_flat[i : i + _BINCOUNT_CHUNK].astype(np.uint16)
                idx <<= 8
                idx |= im_flat[i : i + _BINCOUNT_CHUNK]
                joint += np.bincount(idx, minlength=65536).reshape(256, 256)
            del idx, im_flat, lb_flat
        else:
            lb_counts = np.bincount(lb.ravel(), minlength=lab_bins)
            for v in np.flatnonzero(lb_counts):
                h = np.bincount(im[lb == v].ravel(), minlength=img_bins)
                joint[int(v)] = joint.get(int(v), 0) + h
        del im, lb
    if direct:
        label_values = np.flatnonzero(joint.sum(axis=1))
        joint = joint[label_values]
    else:
        label_values = np.array(sorted(joint), dtype=np.int64)
        joint = np.stack([joint[v] for v in label_values]) if len(label_values) else np.zeros((0, img_bins), np.int64)
    return {"joint": joint, "label_values": label_values, "proj": proj}


def _memory_values(img, lab, a0) -> dict:
    """Fallback for float or scaled data: whole arrays in memory (float32, as DataAnalyzer)."""
    im = np.asarray(img.dataobj, dtype=np.float32)
    lb = np.asarray(lab.dataobj, dtype=np.float32).astype(np.int16) if lab is not None else None
    pos = im > 0
    proj = [pos.any(axis=tuple(a for a in range(3) if a != ax)) for ax in range(3)]
    sl = []
    for ax in range(3):
        nzi = np.flatnonzero(proj[ax])
        sl.append(slice(None) if ax == a0 or nzi.size == 0 else slice(int(nzi[0]), int(nzi[-1]) + 1))
    out = {"proj": proj, "cropped_values": im[tuple(sl)]}
    if lb is not None:
        values = np.unique(lb)
        out["label_values"] = values
        out["fg_values"] = im[lb > 0]
        out["label_values_list"] = [im[lb == v] for v in values]
    else:
        out["label_values"] = np.zeros(0, np.int64)
    return out
