"""Instance scoring of one large crop: streamed in z slabs from zarr (ours) vs the whole crop in memory.

Both sides run our scorer (cellmap.evaluate.score_crop_class) on the same zarr arrays, each in its own
subprocess (so peak RSS is not shared): the baseline first reads both arrays whole into numpy, as the
challenge evaluator does, then scores them in one slab; ours streams z slabs of ``--budget`` voxels and
keeps the relabelled prediction in a temporary file. The scores must be equal.

    python benchmarks/evaluate_bench.py [--size 320] [--budget 4194304]

Last line: JSON with ``speedup`` (baseline time / ours) and ``memory_ratio`` (baseline peak RSS / ours).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _bench import peak_rss_mb  # benchmarks/ is sys.path[0] when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def make_data(root: str, size: int, spacing: int = 20, seed: int = 0) -> None:
    import numpy as np

    from cellmap.grid import Grid
    from cellmap.submission import write_label

    rng = np.random.default_rng(seed)
    truth = np.zeros((size,) * 3, np.uint16)
    pred = np.zeros((size,) * 3, np.uint16)
    k = 0
    for z in range(2, size - spacing, spacing):
        for y in range(2, size - spacing, spacing):
            for x in range(2, size - spacing, spacing):
                k += 1
                d = rng.integers(6, 16, size=3)
                o = rng.integers(0, 3, size=3)
                a = (z + o[0], y + o[1], x + o[2])
                sl = tuple(slice(s, s + int(n)) for s, n in zip(a, d))
                truth[sl] = k
                r = rng.random()
                if r < 0.05:
                    continue  # missed object
                psl = (sl[0], sl[1], slice(sl[2].start + 1, sl[2].stop + 1))
                pred[psl] = k
                if r > 0.95:  # split in two
                    half = (sl[0], sl[1], slice(sl[2].start + 1, sl[2].start + 1 + int(d[2]) // 2))
                    pred[half] = 60000
    grid = Grid((4.0, 4.0, 4.0), (2.0, 2.0, 2.0), truth.shape)
    write_label(os.path.join(root, "t.zarr"), 1, "mito", truth, grid)
    write_label(os.path.join(root, "p.zarr"), 1, "mito", pred, grid)


def child(root: str, budget: int, whole: bool) -> None:
    import numpy as np

    from cellmap.evaluate import ScoringConfig, score_crop_class
    from cellmap.submission import read_hierarchy

    t0 = time.perf_counter()
    t = read_hierarchy(os.path.join(root, "t.zarr"))["crop1"]["mito"]
    p = read_hierarchy(os.path.join(root, "p.zarr"))["crop1"]["mito"]
    ta, pa = t.array, p.array
    if whole:
        ta, pa = np.asarray(ta[:]), np.asarray(pa[:])
        budget = 1 << 62
    c = score_crop_class(ta, pa, t.grid.voxel_size_nm, "instance",
                         config=ScoringConfig(max_voxels_in_memory=budget, progress=False, workdir=root))
    dt = time.perf_counter() - t0
    rss_mb = peak_rss_mb()
    print(json.dumps({"seconds": dt, "rss_mb": rss_mb, "tp": c.tp, "fp": c.fp, "fn": c.fn,
                      "hd": c.hausdorff_sum_nm, "score": c.score}))


def run_child(root: str, budget: int, whole: bool) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", root, "--budget", str(budget)]
                         + (["--whole"] if whole else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--budget", type=int, default=1 << 22)
    ap.add_argument("--child")
    ap.add_argument("--whole", action="store_true")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.budget, a.whole)
        return
    with tempfile.TemporaryDirectory() as root:
        make_data(root, a.size)
        base = run_child(root, a.budget, True)
        ours = run_child(root, a.budget, False)
    same = all(base[k] == ours[k] for k in ("tp", "fp", "fn", "score")) and abs(base["hd"] - ours["hd"]) < 1e-6
    print(f"crop {a.size}^3 uint16, {base['tp'] + base['fn']} truth objects; slab budget {a.budget} voxels")
    print(f"baseline (whole crop in memory): {base['seconds']:.1f} s, peak RSS {base['rss_mb']:.0f} MB")
    print(f"ours (streamed z slabs):        {ours['seconds']:.1f} s, peak RSS {ours['rss_mb']:.0f} MB")
    print(json.dumps({"speedup": round(base["seconds"] / ours["seconds"], 3),
                      "memory_ratio": round(base["rss_mb"] / ours["rss_mb"], 3),
                      "same_scores": bool(same), "score": ours["score"]}))


if __name__ == "__main__":
    main()
