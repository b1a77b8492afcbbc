"""Benchmark: convert one large CellMap-format crop (default 512^3 uint8 at unchanged 8 nm spacing) with our
streaming converter and with a naive baseline (whole arrays into numpy, float32 image, nibabel.save).

Each side runs once in its own subprocess, which reports its wall time and its own peak RSS
(``VmHWM``, see ``_bench.peak_rss_mb``), so they do not pollute each other. The last line printed is one JSON
object with ``speedup`` (baseline time / ours) and ``memory_ratio`` (baseline peak RSS / ours).

    python benchmarks/convert_bench.py [--size 512] [--workdir /tmp/convert_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from _bench import peak_rss_mb  # benchmarks/ is sys.path[0] when run as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

VS = (8.0, 8.0, 8.0)
CLASSES = ("ecs", "mito")


def build(workdir: str, size: int) -> str:
    """A dataset ``jrc_bench`` with raw s0 (size^3 uint8, chunks 64x128x128, realistic EM-like noise)
    and one crop covering it with ``ecs`` and ``mito`` semantic arrays; returns the datasplit path."""
    import numpy as np

    from cellmap import _zarr

    zroot = os.path.join(workdir, "jrc_bench", "jrc_bench.zarr")
    stamp = os.path.join(workdir, f"built-{size}")
    split = os.path.join(workdir, "datasplit.csv")
    if os.path.exists(stamp):
        return split
    shutil.rmtree(os.path.join(workdir, "jrc_bench"), ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    for p in (zroot, f"{zroot}/recon-1", f"{zroot}/recon-1/em", f"{zroot}/recon-1/labels",
              f"{zroot}/recon-1/labels/groundtruth"):
        _zarr.create_group(p)

    def ome(vs, t):
        return {"multiscales": [{"version": "0.4", "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
                                 "datasets": [{"path": "s0", "coordinateTransformations": [
                                     {"type": "scale", "scale": list(vs)}, {"type": "translation", "translation": list(t)}]}]}]}

    rng = np.random.default_rng(0)
    t = tuple(v / 2 for v in VS)
    block = 64  # z rows generated at once (= chunk depth), so building 1024^3 stays within ~1.5 GB

    def em_block(z0, z1):  # smooth cell-like intensity + noise, mean ~125, std ~20 (uint8)
        z, y, x = np.ogrid[z0:z1, :size, :size]
        em = (125 + 12 * np.sin(z / 9.0) * np.cos(y / 13.0) + 8 * np.sin(x / 7.0)).astype(np.float32)
        em += rng.normal(0, 15, em.shape).astype(np.float32)
        return np.clip(em, 0, 255).astype(np.uint8)

    def mask_block(name, z0, z1):
        z, y, x = np.ogrid[z0:z1, :size, :size]
        if name == "ecs":
            m = (x + y) % 97 < 20
        else:
            m = ((z % 64) - 32) ** 2 + ((y % 64) - 32) ** 2 + ((x % 64) - 32) ** 2 < 400
        return np.broadcast_to(m, (z1 - z0, size, size)).astype(np.uint8)

    def write_blocks(group, fn):
        arr = _zarr.create_array(group, "s0", fn(0, min(block, size)), chunks=(64, 128, 128))
        if size > block:  # grow the array along z block by block
            arr.resize((size, size, size))
            for z0 in range(block, size, block):
                arr[z0:min(z0 + block, size)] = fn(z0, min(z0 + block, size))
        return arr

    g = _zarr.create_group(f"{zroot}/recon-1/em/fibsem-uint8")
    g.attrs.update(ome(VS, t))
    write_blocks(g, em_block)
    crop = f"{zroot}/recon-1/labels/groundtruth/crop1"
    cg = _zarr.create_group(crop)
    cg.attrs.update({"cellmap": {"annotation": {"class_names": list(CLASSES)}}})
    for name in CLASSES:
        ann = {"class_name": name, "annotation_type": {"type": "semantic_segmentation",
                                                       "encoding": {"absent": 0, "present": 1, "unknown": 255}}}
        cgc = _zarr.create_group(f"{crop}/{name}")
        cgc.attrs.update({**ome(VS, t), "cellmap": {"annotation": ann}})
        a = write_blocks(cgc, lambda z0, z1, n=name: mask_block(n, z0, z1))
        positive = sum(int(mask_block(name, z0, min(z0 + block, size)).sum(dtype=np.int64))
                       for z0 in range(0, size, block))
        a.attrs.update({"cellmap": {"annotation": {**ann, "complement_counts": {
            "absent": size ** 3 - positive, "unknown": 0}}}})
    with open(split, "w") as fh:
        fh.write(f'"train","{os.path.dirname(zroot)}/jrc_bench.zarr","recon-1/em/fibsem-uint8",'
                 f'"{os.path.dirname(zroot)}/jrc_bench.zarr","recon-1/labels/groundtruth/crop1/[{",".join(CLASSES)}]"\n')
    open(stamp, "w").close()
    return split


def run_ours(split: str, out: str, threads: int = 1) -> dict:
    from auto3dseg.convert import convert_all
    from auto3dseg.conversion import resolve_classes
    from auto3dseg.convert_plan import plan_crop
    from auto3dseg.crop_sources import crop_sources, read_crop_rows

    t0 = time.perf_counter()
    rows = read_crop_rows(split)
    enc = resolve_classes(list(CLASSES), rows)
    row = rows[0]
    src, grid = crop_sources(row, enc.names)
    plan = plan_crop(row.key, row.dataset, row.crop, row.usage, row.raw_group, src, grid, VS, "auto")
    convert_all([plan], enc, out, workers=1, force=True, progress=False, threads=threads)
    return {"seconds": time.perf_counter() - t0, "voxels": plan.out_grid.size}


def run_baseline(split: str, out: str) -> dict:
    """The naive converter: whole arrays into numpy, float32 image, labels by last-writer, nibabel.save."""
    import nibabel as nib
    import numpy as np
    import zarr

    from cellmap.datasplit import read_datasplit

    t0 = time.perf_counter()
    row = read_datasplit(split)[0]
    raw = np.array(zarr.open_array(f"{row.raw_location}/s0", mode="r")[...]).astype(np.float32)
    aff = np.diag([VS[2], VS[1], VS[0], 1.0])
    os.makedirs(out, exist_ok=True)
    nib.save(nib.Nifti1Image(raw.transpose(2, 1, 0), aff), os.path.join(out, "image_0000.nii.gz"))
    lab = np.zeros(raw.shape, np.uint8)
    del raw
    for v, name in enumerate(row.classes, start=1):
        arr = np.array(zarr.open_array(f"{row.crop_location}/{name}/s0", mode="r")[...])
        lab[arr > 0] = v
    nib.save(nib.Nifti1Image(lab.transpose(2, 1, 0), aff), os.path.join(out, "label.nii.gz"))
    return {"seconds": time.perf_counter() - t0, "voxels": int(lab.size)}


def _child(role: str, split: str, out: str, threads: int) -> None:
    res = run_ours(split, out, threads) if role == "ours" else run_baseline(split, out)
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="edge of the cubic crop in voxels (>= 512 for the report)")
    ap.add_argument("--workdir", default="/tmp/convert_bench")
    ap.add_argument("--ours_only", action="store_true", help="skip the baseline (e.g. --size 1024 for the memory bound)")
    ap.add_argument("--threads", type=int, default=1, help="threads of our converter (its default: 1)")
    ap.add_argument("--role", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--split", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        _child(a.role, a.split, a.out, a.threads)
        return
    t = time.perf_counter()
    split = build(a.workdir, a.size)
    print(f"built {a.size}^3 crop in {time.perf_counter() - t:.1f} s under {a.workdir}", flush=True)
    res = {}
    for role in (("ours",) if a.ours_only else ("baseline", "ours")):
        out = os.path.join(a.workdir, f"out_{role}")
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--role", role, "--split", split, "--out", out,
                               "--threads", str(a.threads)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"{role} failed")
        res[role] = json.loads(proc.stdout.strip().splitlines()[-1])
        mb = res[role]["voxels"] / 1e6
        print(f"{role:8s}: {res[role]['seconds']:.2f} s, {mb / res[role]['seconds']:.1f} MB/s (uint8 voxels), "
              f"peak RSS {res[role]['peak_rss_mb']:.0f} MB", flush=True)
    if a.ours_only:
        o = res["ours"]
        print(json.dumps({"benchmark": "convert_zarr_to_nifti", "size": a.size, "voxels": o["voxels"],
                          "ours_seconds": round(o["seconds"], 3), "ours_peak_rss_mb": round(o["peak_rss_mb"], 1)}))
        return
    b, o = res["baseline"], res["ours"]
    print(json.dumps({
        "benchmark": "convert_zarr_to_nifti", "size": a.size, "voxels": o["voxels"], "threads": a.threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ours_seconds": round(o["seconds"], 3), "baseline_seconds": round(b["seconds"], 3),
        "ours_mb_per_s": round(o["voxels"] / 1e6 / o["seconds"], 1),
        "baseline_mb_per_s": round(b["voxels"] / 1e6 / b["seconds"], 1),
        "ours_peak_rss_mb": round(o["peak_rss_mb"], 1), "baseline_peak_rss_mb": round(b["peak_rss_mb"], 1),
        "speedup": round(b["seconds"] / o["seconds"], 2), "memory_ratio": round(b["peak_rss_mb"] / o["peak_rss_mb"], 2)}))


if __name__ == "__main__":
    main()
