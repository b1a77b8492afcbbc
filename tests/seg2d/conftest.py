"""Shared seg2d fixtures: offline Cellpose isolation and a randomly initialised Cellpose net saved to disk."""

import os
import shutil
import tempfile
from pathlib import Path

# Cellpose reads its model folder at import time: point it at an empty folder before anything imports it.
_MODEL_DIR = tempfile.mkdtemp(prefix="seg2d-cpmodels-")
os.environ["CELLPOSE_LOCAL_MODELS_PATH"] = _MODEL_DIR

import pytest  # noqa: E402


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
    shutil.rmtree(_MODEL_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory):
    """A randomly initialised Cellpose 3.x net (torch seed 0) saved to disk and loaded by the real loading code,
    no download. Its cell probability still follows image intensity: at diameter 60 with flow_threshold 0 and
    a cellprob_threshold near the 70th percentile it finds dozens of masks on the synthetic frames, while
    Cellpose's defaults find (almost) none -- a real network whose defaults are wrong."""
    import torch
    from cellpose import models

    torch.manual_seed(0)
    cp = models.CellposeModel(gpu=False)
    path = tmp_path_factory.mktemp("rand") / "random_cp3"
    cp.net.save_model(str(path))
    return str(path)
