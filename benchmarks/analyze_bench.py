"""Benchmark: our streamed analyze vs plain MONAI DataAnalyzer on the same synthetic uint8 EM case(s).

Each side runs in its own subprocess (``--side ours|monai``) that reports its wall time and its own peak RSS
(``VmHWM`` of itself, and ``getrusage`` of its children, if any), so they do not pollute each other. Both sides import
MONAI before their timer starts (ours needs it only for the dataset summary); ``process_seconds`` includes
interpreter start and imports. The per-case numbers
of the two sides are compared (float32 tolerance); the last line printed is one JSON object with
``speedup`` (baseline s/case / ours) and ``memory_ratio`` (baseline peak RSS / ours).

    python benchmarks/analyze_bench.py                # one 512^3 case, ~1-2 min on 2 cores
    python benchmarks/analyze_bench.py --size 256 --cases 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from _bench import peak_rss_mb  # benchmarks/ is sys.path[0] when run as a script

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_case(root: str, name: str, size: int, seed: int) -> dict:
    """A size^3 uint8 EM-like image (x, y, z, 8 nm) and a label with 0..10, 255 blocks; returns a datalist item."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 11, (size // 16,) * 3).astype(np.uint8)
    lab = np.repeat(np.repeat(np.repeat(coarse, 16, 0), 16, 1), 16, 2)
    lab[:, :, -size // 16 :] = 255  # an ignore slab (unknown / outside raw)
    lut = np.array([130, 100, 60, 180, 120, 90, 150, 70, 110, 160, 140] + [0] * 245, np.int16)
    img = lut[lab] + rng.integers(-20, 21, lab.shape, dtype=np.int16)
    img = np.clip(img, 0, 255).astype(np.uint8)
    img[:, :, -size // 16 :] = 0
    aff = np.diag([8.0, 8.0, 8.0, 1.0])
    paths = {}
    for key, arr, sub in (("image", img, f"images/{name}_0000.nii.gz"), ("label", lab, f"labels/{name}.nii.gz")):
        os.makedirs(os.path.join(root, os.path.dirname(sub)), exist_ok=True)
        nib.save(nib.Nifti1Image(arr, aff), os.path.join(root, sub))
        paths[key] = sub
    return {**paths, "fold": 0, "annotated": 1023}


def side(which: str, datalist: str, out: str) -> None:
    """Child process: run one side, print its JSON."""
    import monai.apps.auto3dseg  # noqa: F401  both sides import MONAI before the timer (ours needs it for
    import monai.auto3dseg  # noqa: F401  the dataset summary); process_seconds in the output includes it

    from auto3dseg.analyze import analyze

    start = time.perf_counter()
    analyze(datalist, out, workers=1, engine=which, report=False, progress=False)
    seconds = time.perf_counter() - start
    peak_mb = max(peak_rss_mb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb}))


def _run_side(which, datalist, out):
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--side", which, "--datalist", datalist, "--out", out],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{which} failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - start
    return res


def _max_diff(a, b, acc):
    if isinstance(a, dict):
        assert list(a) == list(b), (list(a), list(b))
        for k in a:
            _max_diff(a[k], b[k], acc)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _max_diff(x, y, acc)
    elif isinstance(a, float) or isinstance(b, float):
        acc["abs"] = max(acc["abs"], abs(a - b))
        acc["rel"] = max(acc["rel"], abs(a - b) / max(abs(a), 1e-12))
    else:
        assert a == b, (a, b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cases", type=int, default=1)
    ap.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--side", choices=["ours", "monai"], help=argparse.SUPPRESS)
    ap.add_argument("--datalist", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(args.side, args.datalist, args.out)

    import yaml

    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        t0 = time.perf_counter()
        items = [make_case(root, f"bench_crop{i}", args.size, i) for i in range(args.cases)]
        datalist = os.path.join(root, "datalist.json")
        with open(datalist, "w") as fh:
            json.dump({"training": items, "ignore_value": 255}, fh)
        print(f"wrote {args.cases} case(s) of {args.size}^3 in {time.perf_counter() - t0:.1f} s", flush=True)
        ours = _run_side("ours", datalist, os.path.join(root, "ours"))
        print(f"ours:     {ours}", flush=True)
        base = _run_side("monai", datalist, os.path.join(root, "monai"))
        print(f"baseline: {base}", flush=True)
        acc = {"abs": 0.0, "rel": 0.0}
        with open(os.path.join(root, "ours", "datastats_by_case.yaml")) as fh:
            a = yaml.safe_load(fh)["stats_by_cases"]
        with open(os.path.join(root, "monai", "datastats_by_case.yaml")) as fh:
            b = {c["image_filepath"]: c for c in yaml.safe_load(fh)["stats_by_cases"]}
        for case in a:
            _max_diff(b[case["image_filepath"]], case, acc)
    n = args.cases
    result = {
        "size": args.size,
        "cases": n,
        "ours_s_per_case": ours["seconds"] / n,
        "baseline_s_per_case": base["seconds"] / n,
        "ours_cases_per_min": 60.0 * n / ours["seconds"],
        "baseline_cases_per_min": 60.0 * n / base["seconds"],
        "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "baseline_peak_rss_mb": round(base["peak_rss_mb"], 1),
        "per_case_max_abs_diff": acc["abs"],
        "per_case_max_rel_diff": acc["rel"],
        "per_case_equal": acc["rel"] <= 1e-5,
        "speedup": base["seconds"] / ours["seconds"],
        "memory_ratio": base["peak_rss_mb"] / ours["peak_rss_mb"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
