"""The Optuna side: objective (FixedTrial), seeded and resumable studies, pruning, search vs defaults, and the
whole `tune` -> `segment` pipeline on a real (randomly initialised, saved to disk) Cellpose network."""

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import tifffile

from seg2d.cli import segment as segment_cli
from seg2d.cli import tune as tune_cli
from seg2d.model import CELLPOSE_DEFAULTS, Flows
from seg2d.objective import Objective, SearchSpace, TuneFrame
from seg2d.study import finished_trials, open_study, run_study
from seg2d.tune import make_pruner
from seg2d_synth import make_frame, write_dataset

SPACE = {"diameter": [10, 20, 30], "flow_threshold": [0.0, 1.5], "cellprob_threshold": [-6.0, 6.0],
         "min_size": [-1, 40], "niter": [0, 200, 500], "bsize": None}
DEFAULTS = {"diameter": 30.0, **CELLPOSE_DEFAULTS}


class OracleFlows:
    """Flows derived from the GT itself instead of a network (Cellpose's own training targets): dynamics
    recover the GT exactly when cellprob_threshold lies between the background and foreground logits.
    The cellprob is biased by -5 (foreground -1, background -9), so Cellpose's default threshold 0 finds nothing."""

    def __init__(self, frames, bias=5.0):
        from cellpose import dynamics

        self.flows = {}
        for f in frames:
            dP = (dynamics.masks_to_flows(f.gt) * 5.0).astype(np.float32)
            cellprob = np.where(f.gt > 0, 4.0, -4.0).astype(np.float32) - np.float32(bias)
            self.flows[id(f.image)] = Flows(dP, cellprob, 200.0)
        self.calls = 0

    def get(self, image, diameter, bsize=224):
        self.calls += 1
        return self.flows[id(image)]


@pytest.fixture(scope="module")
def oracle():
    frames = [TuneFrame(f"f{i}", *make_frame(i)) for i in range(2)]
    return frames, OracleFlows(frames)


def test_objective_with_fixed_trial(oracle):
    frames, source = oracle
    obj = Objective(frames, source, SearchSpace(SPACE, DEFAULTS), objective="f1")
    good = optuna.trial.FixedTrial({"diameter": 20.0, "flow_threshold": 0.4, "cellprob_threshold": -5.0,
                                    "min_size": 15, "niter": 0})
    assert obj(good) == 1.0  # exact recovery of every GT disk
    assert good.user_attrs["dice"] == 1.0 and good.user_attrs["ap_90"] == 1.0
    default = optuna.trial.FixedTrial(SearchSpace(SPACE, DEFAULTS).default_trial())
    assert obj(default) == 0.0 and default.user_attrs["dice"] == 0.0


def test_search_space_contains_defaults():
    space = SearchSpace({**SPACE, "diameter": [12], "min_size": [20, 50]}, {**DEFAULTS, "diameter": 9.22})
    assert space.diameters == [9.22, 12.0] and space.ranges["min_size"] == (15, 50)
    assert space.default_trial()["diameter"] == 9.22


def _params(study):
    return [t.params for t in sorted(study.trials, key=lambda t: t.number)]


def test_seeded_study_is_reproducible_and_beats_defaults(oracle, tmp_path):
    frames, source = oracle
    space = SearchSpace(SPACE, DEFAULTS)
    runs = []
    for name in ("a", "b"):
        study = open_study(str(tmp_path / f"{name}.db"), "s", seed=3, n_startup_trials=5)
        run_study(study, Objective(frames, source, space, objective="f1"), 16, space.default_trial())
        runs.append(study)
    assert _params(runs[0]) == _params(runs[1])
    assert [t.value for t in runs[0].trials] == [t.value for t in runs[1].trials]
    first = min(runs[0].trials, key=lambda t: t.number)
    assert first.params == space.default_trial() and first.value == 0.0   # trial 0 = Cellpose defaults
    assert runs[0].best_value >= 0.99                                       # the search finds the right threshold
    assert -9.0 < runs[0].best_params["cellprob_threshold"] < -1.0


def test_journal_study_resumes_from_storage(oracle, tmp_path):
    frames, source = oracle
    space = SearchSpace(SPACE, DEFAULTS)
    journal = str(tmp_path / "study.log")
    first = open_study(journal, "resume", seed=1)
    assert run_study(first, Objective(frames, source, space), 4, space.default_trial()) == 4
    before = _params(first)
    again = open_study(journal, "resume", seed=1)
    assert finished_trials(again) == 4
    assert run_study(again, Objective(frames, source, space), 7, space.default_trial()) == 3
    after = _params(open_study(journal, "resume", seed=1))
    assert len(after) == 7 and after[:4] == before
    assert sum(p == space.default_trial() for p in after) == 1  # defaults enqueued only once


def test_pruner_stops_hopeless_trials_when_uncached(oracle, tmp_path):
    frames, source = oracle
    assert isinstance(make_pruner("auto", cached=True), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("auto", cached=False), optuna.pruners.MedianPruner)
    space = SearchSpace(SPACE, DEFAULTS)
    study = open_study(str(tmp_path / "p.db"), "p", seed=0, n_startup_trials=3,
                       pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.enqueue_trial({**space.default_trial(), "cellprob_threshold": -5.0})
    run_study(study, Objective(frames, source, space, objective="f1", prune=True), 10)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(sorted(t.intermediate_values) == [0, 1] for t in complete)


def test_tune_pipeline_on_real_network_then_segment(random_weights, tmp_path):
    frames = [make_frame(s, shape=(96, 96), n_cells=10) for s in (60, 61, 62)]
    # the exported GT is flipped upside down and shifted; the aligned masks serve as the baseline
    ds = write_dataset(tmp_path / "ds", frames, mask_fn=lambda g: np.roll(np.flipud(g), (-2, 3), axis=(0, 1)))
    base = write_dataset(tmp_path / "base", frames) / "masks"
    cfg = tmp_path / "cfg.yaml"
    # the random net's cell probability spans about -0.09..-0.01 at diameter 60; its flows fail the QC
    # between flow_threshold ~0.4 and ~2, so good settings are diameter 60, cellprob ~-0.05, flow >= 3
    cfg.write_text("search_space:\n  diameter: [60]\n  niter: [0, 400]\n  cellprob_threshold: [-0.06, -0.035]\n"
                   "  flow_threshold: [3.0, 5.0]\n  min_size: [-1, 30]\nstudy:\n  n_startup_trials: 6\n")
    out = tmp_path / "out"
    tune_cli(str(ds), model=random_weights, n_trials=16, out=str(out), config=str(cfg),
             baseline_masks=str(base), progress=False)

    cal = json.loads((out / "calibration.json").read_text())
    # flipud(roll(flipud(g), (-2, 3))) = roll(g, (2, 3)), so the recovered shift is (-2, -3)
    assert cal["transform"] == "flipud" and cal["shift"] == [-2, -3]
    best = json.loads((out / "best_params.json").read_text())
    for key in ("diameter", "flow_threshold", "cellprob_threshold", "min_size", "niter", "objective", "best_value",
                "mean_iou", "mean_f1_50", "calibration", "model", "versions"):
        assert key in best
    assert best["default_params"] == {"bsize": 224, "diameter": 30.0, "flow_threshold": 0.4,
                                      "cellprob_threshold": 0.0, "min_size": 15, "niter": 0}
    assert best["best_value"] > best["default_value"] + 0.1  # defaults are wrong for this network
    assert best["cache"]["network_runs"] <= 2 * 3             # 2 diameters x 3 frames, whatever the trials
    rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 16
    for name in ("notes.md", "history.png", "overlays.png"):
        assert (out / name).stat().st_size > 0
    assert "Cellpose default" in (out / "notes.md").read_text()
    masks = sorted((out / "masks").glob("*.tif"))
    assert [m.stem for m in masks] == ["frame000", "frame001", "frame002"]

    seg = tmp_path / "seg"
    segment_cli(str(ds / "images"), str(out / "best_params.json"), str(seg), progress=False)
    for m in masks:
        assert np.array_equal(tifffile.imread(seg / m.name), tifffile.imread(m))

    tune_cli(str(ds), model=random_weights, n_trials=18, out=str(out), config=str(cfg),
             baseline_masks=str(base), progress=False)
    resumed = json.loads((out / "best_params.json").read_text())
    assert resumed["n_trials_total"] == 18 and resumed["n_trials_run"] == 2


def test_uncached_tuning_reruns_the_network_and_reports_for_pruning(random_weights, tmp_path):
    from seg2d.tune import tune

    ds = write_dataset(tmp_path / "ds", [make_frame(s) for s in (1, 2)])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("search_space:\n  diameter: [60]\n")
    summary = tune(str(ds), random_weights, 4, str(tmp_path / "out"), config=str(cfg), calibrate=False,
                   cache_memory=False, progress=False)
    assert summary["cache"]["network_runs"] >= 4 * 2 and summary["cache"]["memory_hits"] == 0
    study = open_study(str(tmp_path / "out" / "study.db"), "seg2d")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and all(sorted(t.intermediate_values) == [0, 1] for t in done)


def test_two_processes_share_one_journal_study(random_weights, tmp_path):
    import os
    import subprocess
    import sys

    ds = write_dataset(tmp_path / "ds", [make_frame(s) for s in (4, 5)])
    journal = tmp_path / "shared.log"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("search_space:\n  diameter: [30]\n")  # one diameter: two network runs per worker
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [subprocess.Popen([sys.executable, "-m", "seg2d", "tune", "--dataset", str(ds), "--model", random_weights,
                               "--n_trials", "6", "--out", str(tmp_path / f"w{i}"), "--calibrate=False", "--config", str(cfg),
                               "--storage", str(journal), "--progress=False"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    study = open_study(str(journal), "seg2d")
    assert 6 <= finished_trials(study) <= 7  # the shared total; a worker may finish one trial in flight
    assert len({t.number for t in study.trials}) == len(study.trials)
    default = SearchSpace(SPACE, DEFAULTS).default_trial()
    assert any(t.params["flow_threshold"] == default["flow_threshold"] and t.params["min_size"] == 15
               for t in study.trials)
