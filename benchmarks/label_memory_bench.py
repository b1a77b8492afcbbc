"""Peak RSS and time of the train-time label path: expand-after-crop (ours) vs class-index embedding before the crop.

    python benchmarks/label_memory_bench.py                 # 400^3 crop, 14 classes, one run of each side
    python benchmarks/label_memory_bench.py --size 200      # smaller, for a quick look

Each side runs in its own subprocess on the same uncompressed NIfTI label (uint8, values 0..14 and 255):
- baseline (``monai``): load the label, embed it into class channels the way MONAI's Auto3DSeg templates do
  (``LabelEmbedClassIndex`` of the SegResNet template / the SwinUNETR ``Lambdad``: per class a Python ``sum``
  of ``label == value`` masks, which promotes to int64, ``torch.cat`` of the classes, cast back to the label
  dtype) on the whole crop, then a random crop of the ROI. With ``--templates DIR`` (or AUTO3DSEG_TEMPLATES
  set to a local folder) the real ``LabelEmbedClassIndex`` of ``DIR/segresnet/scripts/segmenter.py`` is used.
- ours: load the label, random crop of the ROI on the single-channel label, then ``PartialLabelToChannelsd``
  (uint8 channels of the patch only).
The last line is one JSON object with ``memory_ratio`` (baseline peak RSS / ours) and ``speedup``
(baseline time / ours, load + expansion + crop).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _bench import peak_rss_mb  # benchmarks/ is sys.path[0] when run as a script

CLASS_INDEX = [[v] for v in range(1, 15)]  # 14 classes, label values 1..14 (CellMap organelles14 order)
IGNORE = 255


def _available_bytes() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _write_label(path: str, size: int) -> None:
    """A (size^3) uint8 label: slabs of every class value, some background and an ignore strip."""
    import nibabel as nib
    import numpy as np

    label = np.zeros((size, size, size), dtype=np.uint8)
    for k in range(15):  # 15 slabs along x: background then classes 1..14
        label[k * size // 15 : (k + 1) * size // 15] = k
    label[:, :, : size // 20] = IGNORE
    nib.save(nib.Nifti1Image(label, np.diag([8.0, 8.0, 8.0, 1.0])), path)


def _template_embed(templates: str | None):
    """The template's LabelEmbedClassIndex class when a local templates folder is given, else None."""
    if not templates or not os.path.isdir(templates):
        return None
    scripts = os.path.join(templates, "segresnet", "scripts")
    if not os.path.isfile(os.path.join(scripts, "segmenter.py")):
        return None
    sys.path.insert(0, scripts)
    import segmenter  # noqa: PLC0415 (third-party template code, only read at run time)

    return segmenter.LabelEmbedClassIndex


def _baseline_embed(label, class_index):
    """Class-index embedding as the templates do it: int64 per-class sums over the whole crop, then cat."""
    import torch

    return torch.cat([sum([label == v for v in values]) for values in class_index], dim=0).to(dtype=label.dtype)


def _worker(side: str, label_path: str, roi: list, templates: str | None) -> dict:
    import torch
    from monai.transforms import Compose, LoadImaged, RandSpatialCropd

    torch.set_num_threads(1)
    rss_imports = int(peak_rss_mb() * 1024 * 1024)
    load = LoadImaged(keys="label", ensure_channel_first=True, image_only=True, dtype=None)  # uint8 as stored
    crop = RandSpatialCropd(keys="label", roi_size=roi, random_size=False)
    used = "ours"
    if side == "ours":
        from auto3dseg.partial_transforms import PartialLabelToChannelsd

        steps = [load, crop, PartialLabelToChannelsd(keys="label", class_index=CLASS_INDEX, ignore_value=IGNORE)]
    else:
        embed_cls = _template_embed(templates)
        if embed_cls is not None:
            embed, used = embed_cls(keys="label", class_index=CLASS_INDEX), "template LabelEmbedClassIndex"
        else:
            from monai.transforms import Lambdad

            embed, used = Lambdad(keys="label", func=lambda x: _baseline_embed(x, CLASS_INDEX)), "int64 sum embedding"
        steps = [load, embed, crop]
    pipeline = Compose(steps)
    pipeline.set_random_state(0)
    t0 = time.perf_counter()
    out = pipeline({"label": label_path, "annotated": (1 << len(CLASS_INDEX)) - 1})["label"]
    seconds = time.perf_counter() - t0
    return {
        "side": side,
        "embedding": used,
        "seconds": seconds,
        "peak_rss_bytes": int(peak_rss_mb() * 1024 * 1024),
        "rss_after_imports_bytes": rss_imports,
        "output_shape": list(out.shape),
        "output_dtype": str(out.dtype),
    }


def _run_side(side: str, label_path: str, roi: list, templates: str | None) -> dict:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--label", label_path, "--roi", *map(str, roi)]
    if templates:
        cmd += ["--templates", templates]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=400, help="crop edge in voxels (default 400)")
    ap.add_argument("--roi", type=int, nargs=3, default=[224, 224, 144], help="training patch (SegResNet default)")
    ap.add_argument("--templates", default=os.environ.get("AUTO3DSEG_TEMPLATES"), help="local templates folder")
    ap.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--label", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.label, args.roi, args.templates)))
        return

    voxels = args.size**3
    need = voxels * (8 * len(CLASS_INDEX) * 2 + 4)  # list of int64 planes + their cat + label copies
    if _available_bytes() < need:
        raise SystemExit(
            f"the baseline needs about {need / 2**30:.1f} GiB for a {args.size}^3 crop with {len(CLASS_INDEX)} "
            f"classes and only {_available_bytes() / 2**30:.1f} GiB are available; pass a smaller --size"
        )
    roi = [min(r, args.size) for r in args.roi]
    with tempfile.TemporaryDirectory() as tmp:
        label_path = os.path.join(tmp, "label.nii")
        _write_label(label_path, args.size)
        ours = _run_side("ours", label_path, roi, args.templates)
        base = _run_side("monai", label_path, roi, args.templates)
    for r in (base, ours):
        print(
            f"{r['side']:>5} ({r['embedding']}): {r['seconds']:.2f} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"({r['rss_after_imports_bytes'] / 2**20:.0f} MiB after imports), output {r['output_shape']} {r['output_dtype']}"
        )
    result = {
        "benchmark": "label_memory",
        "crop": [args.size] * 3,
        "classes": len(CLASS_INDEX),
        "roi": roi,
        "baseline": base["embedding"],
        "baseline_peak_rss_mib": round(base["peak_rss_bytes"] / 2**20, 1),
        "ours_peak_rss_mib": round(ours["peak_rss_bytes"] / 2**20, 1),
        "baseline_seconds": round(base["seconds"], 3),
        "ours_seconds": round(ours["seconds"], 3),
        "memory_ratio": round(base["peak_rss_bytes"] / ours["peak_rss_bytes"], 2),
        "memory_ratio_above_imports": round(
            (base["peak_rss_bytes"] - base["rss_after_imports_bytes"])
            / max(1, ours["peak_rss_bytes"] - ours["rss_after_imports_bytes"]),
            2,
        ),
        "speedup": round(base["seconds"] / ours["seconds"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
