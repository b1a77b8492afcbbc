"""Shared seg2d fixtures: offline Cellpose isolation, synthetic TIFF datasets, one briefly trained model."""

import os
import tempfile
from pathlib import Path

# Cellpose reads its model folder at import time: point it at an empty folder before anything imports it.
_MODEL_DIR = tempfile.mkdtemp(prefix="seg2d-cpmodels-")
os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = _MODEL_DIR

import pytest  # noqa: E402
from seg2d_synth import make_frame, write_dataset  # noqa: E402


class DownloadAttempted(RuntimeError):
    """Raised if anything tries to download Cellpose weights during the tests."""


def _no_download(url, *args, **kwargs):
    raise DownloadAttempted(f"test tried to download {url}")


@pytest.fixture(scope="session", autouse=True)
def offline_cellpose():
    """Cellpose with its model folder in a temp dir and downloads turned into an immediate error."""
    import torch
    from cellpose import models, utils

    models.MODEL_DIR = Path(_MODEL_DIR)  # in case cellpose was imported before this conftest
    saved = (utils.download_url_to_file, models.utils.download_url_to_file)
    utils.download_url_to_file = _no_download
    models.utils.download_url_to_file = _no_download
    torch.set_num_threads(2)
    yield Path(_MODEL_DIR)
    utils.download_url_to_file, models.utils.download_url_to_file = saved


@pytest.fixture(scope="session")
def train_frames():
    return [make_frame(s) for s in range(8)]


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, train_frames):
    """A Cellpose 3.x net trained briefly (30 epochs, 64 px crops) by `seg2d.train.train_model` and saved to
    disk: real weights, never downloaded. Its flows are meaningful but its defaults segment nothing."""
    from seg2d.train import train_model

    root = write_dataset(tmp_path_factory.mktemp("train_ds"), train_frames)
    path = train_model(str(root), str(tmp_path_factory.mktemp("train_out")), model=None, epochs=30, bsize=64,
                       rescale=False, learning_rate=0.005, batch_size=8, diam_mean=15.0)
    return str(path)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A randomly initialised Cellpose 3.x net saved to disk (the real loading code, no download)."""
    import torch
    from cellpose import models

    torch.manual_seed(0)
    cp = models.CellposeModel(gpu=False)
    path = tmp_path_factory.mktemp("rand") / "random_cp3"
    cp.net.save_model(str(path))
    return str(path)
