"""The real Cellpose 3.x network path: offline weights, cached vs full eval, disk cache, tiling."""

import shutil

import numpy as np
import pytest

from seg2d.cache import FlowCache
from seg2d.errors import ModelUnavailableError
from seg2d.model import load_model, resolve_model
from seg2d.tiling import tiled_apply, tile_starts
from seg2d_synth import make_frame


def test_builtin_name_without_weights_fails_at_once_without_download(offline_cellpose):
    assert not (offline_cellpose / "cyto3").exists()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("cyto3")  # a download would raise DownloadAttempted (conftest), not this error
    msg = str(err.value)
    assert "--model PATH" in msg and "CELLPOSE_LOCAL_MODELS_PATH" in msg and str(offline_cellpose) in msg


def test_missing_path_is_not_silently_replaced_by_cyto3(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no such weights file"):
        resolve_model(str(tmp_path / "nope.pt"))
    with pytest.raises(ModelUnavailableError, match="4.x"):
        resolve_model("cpsam")


def test_builtin_name_loads_offline_when_file_is_in_model_folder(offline_cellpose, random_weights):
    target = offline_cellpose / "nuclei"  # nuclei's file name is 'nucleitorch_0'
    shutil.copy(random_weights, offline_cellpose / "nucleitorch_0")
    try:
        adapter = load_model("nuclei")
        assert adapter.resolved.builtin == "nuclei" and adapter.diam_mean == 17.0
    finally:
        (offline_cellpose / "nucleitorch_0").unlink()
    assert not target.exists()


@pytest.fixture(scope="module")
def adapter(random_weights):
    return load_model(random_weights, progress=False)


def test_network_contract_and_defaults(adapter):
    image = make_frame(50)[0]
    flows = adapter.network(image, 30.0)
    assert flows.dP.shape == (2, 64, 64) and flows.cellprob.shape == (64, 64)
    assert flows.dP.dtype == np.float32 and flows.cellprob.dtype == np.float32
    d = adapter.defaults()
    assert d == {"diameter": 30.0, "flow_threshold": 0.4, "cellprob_threshold": 0.0, "min_size": 15, "niter": 0,
                 "bsize": 224}


@pytest.mark.parametrize("diameter,flow_threshold,percentile,min_size,niter", [
    (60.0, 0.0, 70, 15, 0),
    (30.0, 0.0, 50, -1, 1000),
    (60.0, 0.4, 70, 5, 300),
])
def test_cached_masks_identical_to_full_cellpose_eval(adapter, diameter, flow_threshold, percentile, min_size,
                                                      niter):
    image = make_frame(60, shape=(96, 96), n_cells=10)[0]
    cache = FlowCache(adapter)
    flows = cache.get(image, diameter)
    p = {**adapter.defaults(), "diameter": diameter, "flow_threshold": flow_threshold, "min_size": min_size,
         "niter": niter, "cellprob_threshold": float(np.percentile(flows.cellprob, percentile))}
    cached = adapter.masks(flows, p["flow_threshold"], p["cellprob_threshold"], p["min_size"], p["niter"])
    again = adapter.masks(cache.get(image, diameter), p["flow_threshold"], p["cellprob_threshold"], p["min_size"],
                          p["niter"])
    full = adapter.segment(image, p)  # a plain Cellpose eval: network + dynamics
    assert cache.stats()["network_runs"] == 1 and cache.stats()["memory_hits"] == 1
    assert np.array_equal(cached, full) and np.array_equal(again, full)
    if flow_threshold == 0.0:
        assert full.max() >= 5  # a non-trivial comparison


def test_train_writes_weights_that_load(tmp_path):
    from seg2d.errors import ConfigError
    from seg2d.train import train_model
    from seg2d_synth import write_dataset

    ds = write_dataset(tmp_path / "ds", [make_frame(s, shape=(48, 48), n_cells=3) for s in range(2)])
    path = train_model(str(ds), str(tmp_path / "run"), epochs=1, bsize=48, batch_size=2, diam_mean=15.0)
    assert path == tmp_path / "run" / "models" / "seg2d_cellpose" and path.stat().st_size > 1e6
    trained = load_model(str(path), progress=False)
    assert trained.diam_mean == 15.0 and trained.network(make_frame(1)[0], 15.0).dP.shape == (2, 64, 64)
    with pytest.raises(ConfigError, match="already exists"):
        train_model(str(ds), str(tmp_path / "run"), epochs=1, bsize=48)


def test_disk_cache_round_trip(adapter, tmp_path):
    image = make_frame(61)[0]
    first = FlowCache(adapter, memory=False, disk_dir=tmp_path / "flows")
    f1 = first.get(image, 30.0)
    second = FlowCache(adapter, memory=True, disk_dir=tmp_path / "flows")
    f2 = second.get(image, 30.0)
    assert second.stats()["network_runs"] == 0 and second.stats()["disk_hits"] == 1
    assert np.array_equal(f1.dP, f2.dP) and np.array_equal(f1.cellprob, f2.cellprob)
    assert f1.niter_default == f2.niter_default
    assert len(list((tmp_path / "flows").glob("*.npz"))) == 1


def test_tiling_matches_untiled_for_a_local_function():
    rng = np.random.default_rng(0)
    image = rng.random((150, 97)).astype(np.float32)

    def local(a):  # a per-pixel function of a 3x3 neighbourhood: exact where the tile margin is >= 1
        p = np.pad(a, 1, mode="edge")
        return np.stack([p[:-2, 1:-1] + p[2:, 1:-1], a * 2.0])

    full = local(image)
    tiled = tiled_apply(image, local, tile=40, overlap=8, progress=False)
    assert tile_starts(150, 40, 8)[-1] == 110
    # tile borders inside the image are cut halfway into 8 px overlaps: at least 4 px of context each side
    assert np.array_equal(tiled, full)


def test_large_images_run_the_network_in_tiles(random_weights):
    tiled = load_model(random_weights, tile_px=56, tile_overlap_px=16, progress=False)
    image = make_frame(62, shape=(88, 56))[0]  # two 56 px tiles along y
    flows = tiled.network(image, 30.0)
    assert flows.dP.shape == (2, 88, 56) and np.isfinite(flows.cellprob).all()
    assert flows.cellprob.std() > 0
