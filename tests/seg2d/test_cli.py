"""Command line and config: entry points, errors as messages naming the file, YAML true to the code."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seg2d.config import DEFAULT_CONFIG, load_config
from seg2d.errors import CalibrationError, ConfigError
from seg2d_synth import make_frame, write_dataset

REPO = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, cwd=str(REPO))


def test_optimize_cellpose_segmentation_runs_tune():
    r = _run("-c", "import sys; from seg2d.cli import optimize_main; "
                   "sys.argv = ['optimize_cellpose_segmentation', '--help']; optimize_main()")
    text = r.stdout + r.stderr  # Fire prints help to stderr when there is no terminal
    assert "--n_trials" in text and "--baseline_masks" in text


def test_cli_error_names_the_file(tmp_path):
    ds = write_dataset(tmp_path / "ds", [make_frame(0), make_frame(1)])
    (ds / "images" / "frame000.tif").unlink()
    r = _run("-m", "seg2d", "calibrate", "--dataset", str(ds), "--baseline_masks", str(ds / "masks"))
    assert r.returncode != 0
    assert "seg2d: error:" in r.stderr and "frame000.tif: mask has no image" in r.stderr


def test_shipped_yaml_equals_builtin_defaults():
    with open(REPO / "configs" / "seg2d.yaml", encoding="utf-8") as fh:
        assert yaml.safe_load(fh) == DEFAULT_CONFIG
    assert load_config(str(REPO / "configs" / "seg2d.yaml")) == DEFAULT_CONFIG


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("search_space:\n  diamter: [10]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.search_space: unknown setting 'diamter'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="objective 'mAP' unknown"):
        load_config(objective="mAP")


def test_tune_with_a_model_that_finds_nothing_asks_for_baseline_masks(random_weights, tmp_path):
    from seg2d.tune import tune

    ds = write_dataset(tmp_path / "ds", [make_frame(3)])
    with pytest.raises(CalibrationError, match="--baseline_masks"):
        tune(str(ds), random_weights, 2, str(tmp_path / "out"), progress=False)
