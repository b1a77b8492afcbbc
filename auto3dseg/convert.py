"""Convert planned CellMap crops to NIfTI slab by slab (streaming, resumable, optionally in parallel processes).

Layering (array -> crop -> many crops):
  * :func:`compute_slab` turns output z rows [z0, z1) of one crop into uint8 EM, integer labels
    and statistics, reading only the raw and label windows those rows need;
  * :func:`convert_crop` streams every slab of a crop into ``images/<key>_0000.nii.gz`` and
    ``labels/<key>.nii.gz`` (atomic temp + rename) and records provenance;
  * :func:`convert_all` runs many crops, sequentially or as slab tasks in a process pool (a huge
    crop is split across workers; each slab writes a gzip member to a part file and the crop is
    assembled once all its slabs are done), skips crops whose provenance matches, and returns
    one record per crop.

Voxel rules: EM voxels whose centre lies outside raw are 0 and their labels are ignore; labels
are ignore where any contributing raw chunk is missing from the local store, where no class is
known (outside the crop or 255 declared unknown), see ``cellmap.resample`` and
``auto3dseg.labels`` for resampling and overlaps.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from cellmap import _zarr
from cellmap.io import missing_chunks, window_chunks
from cellmap.resample import IGNORE_RANK, max_pool_taps, outside_mask, resample_em, shift_taps, subset_taps, window_of
from cellmap.resample import em_taps as _em_taps_uncached
from cellmap.resample import label_taps as _label_taps_uncached

from auto3dseg.convert_plan import CropPlan, grid_dict, plan_hash
from auto3dseg.datacheck import CropStats
from auto3dseg.errors import Auto3DSegError
from auto3dseg.labels import LabelEncoding
from auto3dseg.nifti import NiftiStreamWriter, assemble_nifti, compress_member
from cellmap.atomic import remove_stale_temps, write_bytes_atomic, write_json_atomic
from auto3dseg.zarr_window import reader_for

__all__ = ["SlabResult", "compute_slab", "convert_crop", "convert_all", "image_name", "label_name",
           "raw_missing", "PROVENANCE_DIR"]

PROVENANCE_DIR = ".provenance"
#: Threads per process converting slabs of one crop concurrently (I/O, decoding, numpy, deflate).
DEFAULT_THREADS = 1
PARTS_DIR = ".parts"

@functools.lru_cache(maxsize=64)
def em_taps(src_grid, out_grid):
    """``cellmap.resample.em_taps``, computed once per (source grid, output grid) per process."""
    return _em_taps_uncached(src_grid, out_grid)


@functools.lru_cache(maxsize=256)
def label_taps(src_grid, out_grid):
    """``cellmap.resample.label_taps``, computed once per (source grid, output grid) per process."""
    return _label_taps_uncached(src_grid, out_grid)


def image_name(key: str) -> str:
    return f"images/{key}_0000.nii.gz"


def label_name(key: str) -> str:
    return f"labels/{key}.nii.gz"


@dataclass
class SlabResult:
    """What one slab contributes to its crop's record (no volume data besides mid-slice pieces)."""

    key: str
    z0: int
    z1: int
    stats: CropStats
    class_counts: Dict[str, List[int]] = field(default_factory=dict)  # name -> [source, output, lost]
    slices: Dict[str, tuple] = field(default_factory=dict)
    parts: Optional[Tuple[str, Optional[str]]] = None


def raw_missing(plan: CropPlan) -> Tuple[int, float]:
    """(missing chunk count, fraction of raw voxels read for the crop whose chunk is missing)."""
    if _zarr.is_remote(plan.raw_array):
        return 0, 0.0
    et = em_taps(plan.raw_level.grid, plan.out_grid)
    start, stop = zip(*(window_of(t) for t in et))
    meta = _zarr.array_meta(plan.raw_array)
    missing = set(missing_chunks(plan.raw_array, start, stop))
    total = int(np.prod([b - a for a, b in zip(start, stop)]))
    if not missing or total == 0:
        return len(missing), 0.0
    vox = 0
    for idx, sl in window_chunks(start, stop, meta["chunks"], meta["shape"]):
        if idx in missing:
            vox += int(np.prod([s.stop - s.start for s in sl]))
    return len(missing), vox / total


def complete_raw_levels(plan: CropPlan) -> List[str]:
    """Raw levels whose chunks covering this crop are all present locally (for the fix hint)."""
    from cellmap.multiscale import read_multiscale

    if _zarr.is_remote(plan.raw_array):
        return []
    ms = read_multiscale(plan.raw_group)
    out = []
    for lv in ms.levels:
        et = em_taps(lv.grid, plan.out_grid)
        start, stop = zip(*(window_of(t) for t in et))
        if not missing_chunks(ms.array_location(lv), start, stop):
            out.append(lv.path)
    return out


def _label_outside(plan: CropPlan, z0: int, z1: int) -> Optional[np.ndarray]:
    """Bool (dz, y, x): output voxels with no label-grid voxel (outside the crop); None if there is none."""
    lt = label_taps(plan.label_grid, plan.out_grid)
    ax = [lt[0].index[z0:z1, 0] < 0, lt[1].index[:, 0] < 0, lt[2].index[:, 0] < 0]
    if not any(a.any() for a in ax):
        return None
    return ax[0][:, None, None] | ax[1][None, :, None] | ax[2][None, None, :]


def compute_slab(plan: CropPlan, enc: LabelEncoding, z0: int, z1: int):
    """Convert output rows [z0, z1) of one crop.

    Returns ``(em, labels, result)``: ``em`` uint8 (dz, y, x), ``labels`` ``enc.dtype`` (dz, y, x)
    or None for image-only crops, and a :class:`SlabResult`.
    """
    out = plan.out_grid
    raw_grid = plan.raw_level.grid
    reader = reader_for(plan.raw_array)
    if reader.dtype != np.uint8:
        raise Auto3DSegError(f"{plan.raw_array}: raw dtype {reader.dtype}, expected uint8 (fibsem-uint8)")
    et = em_taps(raw_grid, out)
    tz = subset_taps(et[0], z0, z1)
    win = [window_of(tz), window_of(et[1]), window_of(et[2])]
    src, miss_src = reader.read([w[0] for w in win], [w[1] for w in win])
    taps = (shift_taps(tz, win[0][0]), shift_taps(et[1], win[1][0]), shift_taps(et[2], win[2][0]))
    em = resample_em(src, taps)
    del src
    if miss_src is not None:
        missing = max_pool_taps(miss_src, taps, outside_value=1).astype(bool)
    else:
        missing = None
    outside = None
    if _any_outside(raw_grid, out):
        outside = outside_mask(raw_grid, out, (z0, z1))
        em[outside] = 0
        if not outside.any():
            outside = None
    no_raw = outside if missing is None else (missing if outside is None else outside | missing)
    labels = value_counts = None
    counts: Dict[str, List[int]] = {}
    if plan.has_labels:
        labels, counts, value_counts = _slab_labels(plan, enc, z0, z1, no_raw)
    stats = CropStats.of_slab(em, None if no_raw is None else ~no_raw, labels, outside, missing, enc.ignore_value,
                              value_counts)
    res = SlabResult(plan.key, z0, z1, stats, counts, _mid_pieces(out.shape, z0, z1, em, labels))
    return em, labels, res


def _any_outside(raw_grid, out) -> bool:
    """Does any output voxel centre lie outside raw (cheap per-axis test)?"""
    from cellmap.resample import outside_axis

    for a in range(3):
        c = (raw_grid.corner_nm[a], raw_grid.voxel_size_nm[a], raw_grid.shape[a], out.corner_nm[a],
             out.voxel_size_nm[a], out.shape[a])
        if outside_axis(*c).any():
            return True
    return False


def _slab_labels(plan: CropPlan, enc: LabelEncoding, z0: int, z1: int, no_raw: Optional[np.ndarray]):
    """Labels of output rows [z0, z1) and per class [source voxels, output voxels, voxels lost to overlaps].

    Classes are merged from the highest precedence down, so when class c is merged the running
    maximum already holds every class that can beat it: its voxels lost to an unrelated class are
    counted right there, without keeping per-class masks.
    """
    out = plan.out_grid
    shape = (z1 - z0, out.shape[1], out.shape[2])
    ranks = np.zeros(shape, enc.rank_dtype)
    lab_out = _label_outside(plan, z0, z1)
    maybe_ignore = lab_out is not None or no_raw is not None  # else ignore comes only from pooling/unknown
    if lab_out is not None:
        ranks[lab_out] = IGNORE_RANK
    counts: Dict[str, List[int]] = {}
    by_name = {cs.name: cs for cs in plan.classes}
    any_no_raw = no_raw is not None and bool(no_raw.any())
    top = IGNORE_RANK  # highest rank merged so far
    for name in enc.order:  # highest precedence first
        cs = by_name.get(name)
        if cs is None or cs.status == "unknown" or not cs.arrays:
            continue
        lt = label_taps(cs.grid, out)
        ltz = subset_taps(lt[0], z0, z1)
        win = [window_of(ltz), window_of(lt[1]), window_of(lt[2])]
        r = enc.rank(name)
        if any(b <= a for a, b in win):
            counts[name] = [0, 0, 0]
            continue
        pos = unk = src_rank = None
        n_pos = 0
        starts, stops = [w[0] for w in win], [w[1] for w in win]
        if len(cs.arrays) == 1 and cs.unknown_values[0] is None:
            a, _ = reader_for(cs.arrays[0]).read(starts, stops, with_missing=False)
            if a.dtype == enc.rank_dtype and a.size and int(a.max()) <= 1:  # 0/1 semantic: rank in place
                n_pos = int(np.count_nonzero(a))
                src_rank = np.multiply(a, enc.rank_dtype.type(r), out=a)
            else:
                pos = a != 0
            del a
        else:
            for loc, unk_value in zip(cs.arrays, cs.unknown_values):
                a, _ = reader_for(loc).read(starts, stops, with_missing=False)
                p = a != 0
                if unk_value is not None:
                    u = a == unk_value
                    if u.any():
                        p &= ~u
                        unk = u if unk is None else (unk | u)
                pos = p if pos is None else (pos | p)
                del a
        if src_rank is None:
            n_pos = int(np.count_nonzero(pos))
            src_rank = pos.view(np.uint8) * enc.rank_dtype.type(r)
            if src_rank.dtype != enc.rank_dtype:
                src_rank = src_rank.astype(enc.rank_dtype)
            if unk is not None:
                np.maximum(src_rank, unk.view(np.uint8), out=src_rank)  # ignore rank 1 where unknown
        taps = (shift_taps(ltz, win[0][0]), shift_taps(lt[1], win[1][0]), shift_taps(lt[2], win[2][0]))
        pooled = max_pool_taps(src_rank, taps, outside_value=IGNORE_RANK)
        lost = 0
        if top > r:  # some class merged before can beat this one
            beaten = (pooled == r) & (ranks > r)
            if any_no_raw:
                beaten &= ~no_raw
            if beaten.any():
                lost = int(np.count_nonzero(~_channel_lut(enc, name)[ranks[beaten]]))
            del beaten
        if top == IGNORE_RANK and not maybe_ignore and pooled.dtype == ranks.dtype:
            ranks = np.array(pooled, copy=True)  # first class merged into all-background ranks
        else:
            np.maximum(ranks, pooled, out=ranks)
        maybe_ignore = maybe_ignore or unk is not None or not all(t.is_identity_slice() for t in taps)
        top = max(top, r)
        counts[name] = [n_pos, 0, lost]
        del src_rank, pos, pooled
    if any_no_raw:
        ranks[no_raw] = IGNORE_RANK
    lut = enc.value_of_rank()
    merged = [enc.rank(n) for n in counts]
    if len(merged) <= 12:  # a few compare passes beat bincount/take, which widen uint8 to intp
        hist = np.zeros(enc.n_classes + 2, np.int64)
        labels = np.zeros(ranks.shape, enc.dtype)
        for r in ([IGNORE_RANK] if maybe_ignore else []) + merged:
            m = ranks == r
            hist[r] = np.count_nonzero(m)
            if hist[r]:
                labels[m] = lut[r]
        hist[0] = ranks.size - hist.sum()
    else:
        hist = np.bincount(ranks.ravel(), minlength=enc.n_classes + 2)
        labels = np.take(lut, ranks)
    for name in counts:
        counts[name][1] = int(hist[_channel_lut(enc, name)].sum())
    value_counts = {int(lut[r]): int(c) for r, c in enumerate(hist) if c}
    return labels, counts, value_counts


def _channel_lut(enc: LabelEncoding, name: str) -> np.ndarray:
    """Bool over ranks: True for the ranks whose label value belongs to ``name``'s MONAI channel."""
    chan = np.zeros(enc.n_classes + 2, bool)
    for v in enc.index_of(name):
        chan[enc.rank(enc.names[v - 1])] = True
    return chan


def _mid_pieces(shape, z0, z1, em, labels) -> Dict[str, tuple]:
    zm, ym, xm = (s // 2 for s in shape)
    pieces = {"y": (em[:, ym, :].copy(), None if labels is None else labels[:, ym, :].copy()),
              "x": (em[:, :, xm].copy(), None if labels is None else labels[:, :, xm].copy())}
    if z0 <= zm < z1:
        pieces["z"] = (em[zm - z0].copy(), None if labels is None else labels[zm - z0].copy())
    return pieces


def _merge_results(results: Sequence[SlabResult]) -> dict:
    """Crop-level statistics, class counts and mid slices from its slab results (any order)."""
    results = sorted(results, key=lambda r: r.z0)
    stats = CropStats()
    counts: Dict[str, List[int]] = {}
    for r in results:
        stats = stats.merge(r.stats)
        for n, c in r.class_counts.items():
            acc = counts.setdefault(n, [0, 0, 0])
            for i in range(3):
                acc[i] += c[i]
    slices = {}
    for axis in ("y", "x"):
        ems = [r.slices[axis][0] for r in results]
        labs = [r.slices[axis][1] for r in results]
        slices[axis] = (np.concatenate(ems), None if labs[0] is None else np.concatenate(labs))
    for r in results:
        if "z" in r.slices:
            slices["z"] = r.slices["z"]
    return {"stats": stats, "counts": counts, "slices": slices}


# ---------------------------------------------------------------------------------- one crop
def _provenance_path(output_dir: Path, key: str) -> Path:
    return output_dir / PROVENANCE_DIR / f"{key}.json"


def load_provenance(output_dir: Path, plan: CropPlan, digest: str) -> Optional[dict]:
    """The stored record of a crop when its outputs exist and were made from the same sources and parameters."""
    p = _provenance_path(output_dir, plan.key)
    if not p.exists():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("hash") != digest:
        return None
    files = [output_dir / image_name(plan.key)] + ([output_dir / label_name(plan.key)] if plan.has_labels else [])
    sizes = rec.get("file_sizes", {})
    for f in files:
        rel = str(f.relative_to(output_dir))
        if not f.exists() or f.stat().st_size != sizes.get(rel):
            return None
    return rec


def _crop_record(plan: CropPlan, enc: LabelEncoding, merged: dict, missing: Tuple[int, float], digest: str) -> dict:
    stats: CropStats = merged["stats"]
    classes = {}
    for cs in plan.classes:
        c = merged["counts"].get(cs.name, [0, 0, 0])
        status = cs.status
        if status == "annotated" and c[0] == 0:
            status = "absent"
        classes[cs.name] = {"status": status, "source_voxels": c[0], "output_voxels": c[1],
                            "overlap_lost_voxels": c[2], "arrays": list(cs.arrays),
                            **({"derived_from": list(cs.derived_from)} if cs.derived_from else {})}
    return {
        "key": plan.key, "dataset": plan.dataset, "crop": plan.crop, "usage": plan.usage, "hash": digest,
        "source_label_grid": grid_dict(plan.label_grid),
        "raw": {"group": plan.raw_group, "level": plan.raw_level.path, **grid_dict(plan.raw_level.grid)},
        "output": {**grid_dict(plan.out_grid), "image": image_name(plan.key),
                   "label": label_name(plan.key) if plan.has_labels else None},
        "raw_missing_chunks": missing[0], "raw_missing_chunk_fraction": round(missing[1], 6),
        "raw_complete_levels": complete_raw_levels(plan) if missing[0] else None,
        "stats": stats.to_dict(), "classes": classes, "annotated": plan.annotated,
        "label_values": {n: enc.value(n) for n in enc.names},
    }


def _slab_job(plan: CropPlan, enc: LabelEncoding, z0: int, z1: int, write: bool):
    """Compute one slab and deflate its two gzip members (runs in a thread: numpy, numcodecs and
    isal release the GIL on large buffers)."""
    em, labels, res = compute_slab(plan, enc, z0, z1)
    members = None
    if write:
        members = (compress_member(em), None if labels is None else compress_member(labels))
    return res, members


def _slab_stream(plan: CropPlan, enc: LabelEncoding, write: bool, pool, threads: int):
    """(result, members) of every slab in z order; with a thread pool at most ``threads + 1``
    slabs are in flight, so memory stays bounded."""
    if pool is None:
        for z0, z1 in plan.slabs:
            yield _slab_job(plan, enc, z0, z1, write)
        return
    pending = []
    slabs = iter(plan.slabs)
    for z0, z1 in slabs:
        pending.append(pool.submit(_slab_job, plan, enc, z0, z1, write))
        if len(pending) > threads:
            break
    while pending:
        fut = pending.pop(0)
        yield fut.result()
        nxt = next(slabs, None)
        if nxt is not None:
            pending.append(pool.submit(_slab_job, plan, enc, nxt[0], nxt[1], write))


def convert_crop(plan: CropPlan, enc: LabelEncoding, output_dir, dry_run: bool = False,
                 params: Optional[dict] = None, on_slab: Optional[Callable[[int], None]] = None,
                 threads: int = DEFAULT_THREADS) -> Tuple[dict, dict]:
    """Convert one crop in this process, streaming slab by slab into its two NIfTI files.

    ``threads`` slabs are computed and deflated concurrently; they are written in z order.

    Returns ``(record, slices)``: the crop record (also stored as provenance unless ``dry_run``)
    and its mid slices for the picture.
    """
    output_dir = Path(output_dir)
    missing = raw_missing(plan)
    digest = plan_hash(plan, params or {}, missing[0])
    writers = []
    if not dry_run:
        out = plan.out_grid
        writers.append(NiftiStreamWriter(output_dir / image_name(plan.key), out.shape, np.uint8,
                                         out.voxel_size_nm, out.translation_nm))
        if plan.has_labels:
            writers.append(NiftiStreamWriter(output_dir / label_name(plan.key), out.shape, enc.dtype,
                                             out.voxel_size_nm, out.translation_nm))
    results = []
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 and len(plan.slabs) > 1 else None
    try:
        for res, members in _slab_stream(plan, enc, bool(writers), pool, threads):
            if writers:
                writers[0].write_member(members[0], res.z1 - res.z0)
                if plan.has_labels:
                    writers[1].write_member(members[1], res.z1 - res.z0)
            results.append(res)
            del members
            if on_slab:
                on_slab(res.z1 - res.z0)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    merged = _merge_results(results)
    record = _crop_record(plan, enc, merged, missing, digest)
    if not dry_run:
        _store_provenance(output_dir, plan, record)
    return record, merged["slices"]


def _store_provenance(output_dir: Path, plan: CropPlan, record: dict) -> None:
    files = [image_name(plan.key)] + ([label_name(plan.key)] if plan.has_labels else [])
    rec = dict(record, file_sizes={f: (output_dir / f).stat().st_size for f in files}, written_at=time.time())
    write_json_atomic(_provenance_path(output_dir, plan.key), rec)


# ------------------------------------------------------------------------------ parallel slabs
def _slab_task(plan: CropPlan, enc: LabelEncoding, z0: int, z1: int, part_dir: Optional[str]) -> SlabResult:
    em, labels, res = compute_slab(plan, enc, z0, z1)
    if part_dir is not None:
        img = os.path.join(part_dir, f"img_{z0:08d}.gz")
        _write_part(img, compress_member(em))
        lab = None
        if labels is not None:
            lab = os.path.join(part_dir, f"lab_{z0:08d}.gz")
            _write_part(lab, compress_member(labels))
        res.parts = (img, lab)
    return res


def _write_part(path: str, data: bytes) -> None:
    write_bytes_atomic(path, data, fsync=False)


def _finish_parallel_crop(plan: CropPlan, enc: LabelEncoding, output_dir: Path, results: List[SlabResult],
                          dry_run: bool, params: dict) -> Tuple[dict, dict]:
    results.sort(key=lambda r: r.z0)
    missing = raw_missing(plan)
    digest = plan_hash(plan, params, missing[0])
    out = plan.out_grid
    if not dry_run:
        assemble_nifti(output_dir / image_name(plan.key), out.shape, np.uint8, out.voxel_size_nm,
                       out.translation_nm, [(Path(r.parts[0]), r.z1 - r.z0) for r in results])
        if plan.has_labels:
            assemble_nifti(output_dir / label_name(plan.key), out.shape, enc.dtype, out.voxel_size_nm,
                           out.translation_nm, [(Path(r.parts[1]), r.z1 - r.z0) for r in results])
        shutil.rmtree(output_dir / PARTS_DIR / plan.key, ignore_errors=True)
    merged = _merge_results(results)
    record = _crop_record(plan, enc, merged, missing, digest)
    if not dry_run:
        _store_provenance(output_dir, plan, record)
    return record, merged["slices"]


def _prepare_dirs(output_dir: Path) -> None:
    for sub in ("images", "labels", PROVENANCE_DIR):
        (output_dir / sub).mkdir(parents=True, exist_ok=True)
        remove_stale_temps(output_dir / sub)
    shutil.rmtree(output_dir / PARTS_DIR, ignore_errors=True)


def convert_all(plans: Sequence[CropPlan], enc: LabelEncoding, output_dir, workers: int = 1, dry_run: bool = False,
                force: bool = False, params: Optional[dict] = None, executor=None,
                progress: bool = True, threads: int = DEFAULT_THREADS) -> Dict[str, Tuple[dict, Optional[dict]]]:
    """Convert every planned crop; returns {key: (record, slices or None when skipped)}.

    A crop is skipped (``record["skipped"] = True``) when its provenance hash and output files
    match, unless ``force``. Failures of one crop are recorded (``record["error"]``) and do not
    stop the others. ``workers > 1`` (or an ``executor`` with ``submit``, e.g. a dask
    ``distributed.Client``) runs slab tasks in parallel.
    """
    from tqdm import tqdm

    output_dir = Path(output_dir)
    params = params or {}
    if not dry_run:
        _prepare_dirs(output_dir)
    out: Dict[str, Tuple[dict, Optional[dict]]] = {}
    todo: List[CropPlan] = []
    for plan in plans:
        if not force and not dry_run:
            try:
                digest = plan_hash(plan, params, raw_missing(plan)[0])
            except Exception as exc:  # recorded as a failed crop below
                out[plan.key] = (_failed(plan, exc), None)
                continue
            rec = load_provenance(output_dir, plan, digest)
            if rec is not None:
                rec = dict(rec, skipped=True)
                out[plan.key] = (rec, None)
                continue
        todo.append(plan)
    total_rows = sum(p.out_grid.shape[0] for p in todo)
    bar = tqdm(total=total_rows, desc="converting (z rows)", unit="row", disable=not progress or not todo)
    try:
        if executor is None and workers <= 1:
            for plan in todo:
                try:
                    out[plan.key] = convert_crop(plan, enc, output_dir, dry_run, params, on_slab=bar.update,
                                                 threads=threads)
                except Auto3DSegError as exc:
                    out[plan.key] = (_failed(plan, exc), None)
                except Exception as exc:  # noqa: BLE001 - recorded per crop, the run goes on
                    out[plan.key] = (_failed(plan, exc), None)
        else:
            out.update(_run_parallel(todo, enc, output_dir, workers, dry_run, params, executor, bar))
    finally:
        bar.close()
    return out


def _failed(plan: CropPlan, exc: BaseException) -> dict:
    return {"key": plan.key, "dataset": plan.dataset, "crop": plan.crop, "usage": plan.usage,
            "error": f"{type(exc).__name__}: {exc}", "classes": {}, "annotated": plan.annotated,
            "source_label_grid": grid_dict(plan.label_grid), "output": {**grid_dict(plan.out_grid)}}


def _run_parallel(todo, enc, output_dir: Path, workers: int, dry_run: bool, params: dict, executor, bar):
    own = executor is None
    if own:
        import multiprocessing as mp

        executor = ProcessPoolExecutor(max_workers=max(1, workers), mp_context=mp.get_context("spawn"))
    out = {}
    pending: Dict[str, List[SlabResult]] = {p.key: [] for p in todo}
    by_key = {p.key: p for p in todo}
    futures = {}
    try:
        for plan in todo:
            part_dir = None
            if not dry_run:
                part_dir = str(output_dir / PARTS_DIR / plan.key)
                os.makedirs(part_dir, exist_ok=True)
            for z0, z1 in plan.slabs:
                fut = executor.submit(_slab_task, plan, enc, z0, z1, part_dir)
                futures[fut] = plan.key
        for fut in _as_completed(futures, own):
            key = futures[fut]
            if key in out:
                continue
            try:
                res = fut.result()
            except Exception as exc:  # noqa: BLE001 - recorded per crop
                out[key] = (_failed(by_key[key], exc), None)
                shutil.rmtree(output_dir / PARTS_DIR / key, ignore_errors=True)
                continue
            bar.update(res.z1 - res.z0)
            pending[key].append(res)
            if len(pending[key]) == len(by_key[key].slabs):
                try:
                    out[key] = _finish_parallel_crop(by_key[key], enc, output_dir, pending.pop(key), dry_run, params)
                except Exception as exc:  # noqa: BLE001
                    out[key] = (_failed(by_key[key], exc), None)
    finally:
        if own:
            executor.shutdown(cancel_futures=True)
    return out


def _as_completed(futures, own: bool):
    if own:
        return as_completed(futures)
    from distributed import as_completed as das  # a dask distributed Client

    return das(list(futures))
