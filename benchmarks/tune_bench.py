"""Trials per minute of seg2d's cached tuning vs a full Cellpose `eval` per trial (the plain approach).

Both sides run the same seeded Optuna study (same search space, same frames, same metric) in separate
subprocesses; each reports its wall time, trials/minute, trial values and peak RSS. The plain side calls
`CellposeModel.eval` (network + dynamics) for every frame of every trial; ours runs the network once per
(frame, diameter) and only the mask dynamics per trial. The last line printed is one JSON object with
`speedup` = plain seconds per trial / ours, and `memory_ratio` = plain peak RSS / ours.

    python benchmarks/tune_bench.py [--model PATH] [--n_trials 40] [--frames 2] [--size 192]

Without --model, a Cellpose 3.x net is first trained briefly on synthetic 64 px frames (`seg2d.train`, 30
epochs, offline, about 30 s on 2 idle cores; not timed) so that the dynamics run on realistic flows that give
real masks; the search space is then diameter {model default, 12, 15} px, cellprob_threshold -2..2,
flow_threshold 0..1.5, min_size -1..60, niter {default, 200, 500}.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _bench import peak_rss_mb  # benchmarks/ is sys.path[0] when run as a script
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synth_frame(seed, size, n_cells):
    import numpy as np
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    gt = np.zeros((size, size), np.int32)
    k = 0
    for _ in range(50 * n_cells):
        r = int(rng.integers(4, 8))
        c = (int(rng.integers(r + 2, size - r - 2)), int(rng.integers(r + 2, size - r - 2)))
        rr, cc = disk(c, r + 1, shape=gt.shape)
        if gt[rr, cc].any():
            continue
        rr, cc = disk(c, r, shape=gt.shape)
        k += 1
        gt[rr, cc] = k
        if k >= n_cells:
            break
    image = (gt > 0).astype(np.float32) * (1.0 + 0.5 * rng.random()) + rng.normal(0, 0.2, gt.shape).astype(
        np.float32)
    return image, gt


def write_frames(root, frames):
    import tifffile

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, (image, gt) in enumerate(frames):
        tifffile.imwrite(root / "images" / f"frame{i:03d}.tif", image)
        tifffile.imwrite(root / "masks" / f"frame{i:03d}.tif", gt.astype("uint16"))
    return root


def side(args):
    """One side of the benchmark, in its own process; prints one JSON line."""
    import numpy as np
    import optuna
    import torch

    from seg2d.cache import FlowCache
    from seg2d.io import load_dataset
    from seg2d.metrics import frame_scores, mean_scores
    from seg2d.model import load_model
    from seg2d.objective import Objective, SearchSpace, TuneFrame

    torch.set_num_threads(2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frames = [TuneFrame(f.name, f.image, f.mask) for f in load_dataset(args.dataset)]
    adapter = load_model(args.model, progress=False)
    lo, hi = (float(v) for v in args.cellprob.split(","))
    space = SearchSpace({"diameter": [12.0, 15.0], "flow_threshold": [0.0, 1.5], "cellprob_threshold": [lo, hi],
                         "min_size": [-1, 60], "niter": [0, 200, 500], "bsize": None}, adapter.defaults())
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=8)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial(space.default_trial())
    if args.side == "ours":
        objective = Objective(frames, FlowCache(adapter), space, objective="dice")
    else:
        def objective(trial):
            p = space.suggest(trial)
            scores = [frame_scores(f.gt, adapter.segment(f.image, p)) for f in frames]
            return mean_scores(scores)["dice"]
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.n_trials)
    seconds = time.perf_counter() - t0
    values = [t.value for t in sorted(study.trials, key=lambda t: t.number)]
    print(json.dumps({"side": args.side, "seconds": seconds, "n_trials": len(values),
                      "trials_per_minute": 60.0 * len(values) / seconds, "values": values,
                      "best_value": float(np.max(values)),
                      "peak_rss_mb": peak_rss_mb()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Cellpose 3.x weights file (default: train one briefly)")
    ap.add_argument("--n_trials", type=int, default=40)
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--cellprob", default="-2,2", help="cellprob_threshold search range 'low,high'")
    ap.add_argument("--size", type=int, default=192, help="frame side in px")
    ap.add_argument("--side", choices=("ours", "plain"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return side(args)

    work = Path(tempfile.mkdtemp(prefix="seg2d-bench-"))
    os.environ.setdefault("CELLPOSE_LOCAL_MODELS_PATH", str(work / "cpmodels"))  # never fetch weights
    n_cells = max(6, int(30 * (args.size / 192) ** 2))
    dataset = write_frames(work / "ds", [synth_frame(100 + i, args.size, n_cells) for i in range(args.frames)])
    model = args.model
    if model is None:
        from seg2d.train import train_model

        train_ds = write_frames(work / "train", [synth_frame(i, 64, 6) for i in range(8)])
        t0 = time.perf_counter()
        model = str(train_model(str(train_ds), str(work / "trained"), epochs=30, bsize=64, rescale=False,
                                learning_rate=0.005, diam_mean=15.0))
        print(f"trained {model} in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)

    results = {}
    for name in ("ours", "plain"):
        cmd = [sys.executable, __file__, "--side", name, "--model", model, "--dataset", str(dataset),
               "--n_trials", str(args.n_trials), f"--cellprob={args.cellprob}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"{name} side failed")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[name]
        print(f"{name:5s}: {r['n_trials']} trials in {r['seconds']:.1f} s = {r['trials_per_minute']:.1f} trials/min, "
              f"best Dice {r['best_value']:.4f}, peak RSS {r['peak_rss_mb']:.0f} MB")
    ours, plain = results["ours"], results["plain"]
    print(json.dumps({
        "benchmark": "seg2d_tune", "frames": args.frames, "size_px": args.size, "n_trials": args.n_trials,
        "ours_trials_per_minute": round(ours["trials_per_minute"], 2),
        "plain_trials_per_minute": round(plain["trials_per_minute"], 2),
        "speedup": round(plain["seconds"] / ours["seconds"], 2),
        "memory_ratio": round(plain["peak_rss_mb"] / ours["peak_rss_mb"], 3),
        "identical_trial_values": ours["values"] == plain["values"],
        "best_value": ours["best_value"],
    }))


if __name__ == "__main__":
    main()
