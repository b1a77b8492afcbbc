"""Shared fixtures for tests/cellmap: tiny real zarr v2 stores with analytic content.

No torch, no MONAI: this suite also runs under zarr-python 2.18 (`make test-zarr2`).
"""

import pytest

from cellmap_fixtures import write_analytic_pyramid


@pytest.fixture(scope="session")
def analytic_raw(tmp_path_factory):
    """Anisotropic analytic raw: s0 (5.24, 4, 4) nm, translation (2.62, 10, -6) nm,
    shape (20, 36, 44), chunks (4, 8, 12) (non-cubic, ragged edges), levels s0..s2."""
    root = tmp_path_factory.mktemp("analytic") / "raw.zarr"
    vs0, t0 = (5.24, 4.0, 4.0), (2.62, 10.0, -6.0)
    path = write_analytic_pyramid(root, vs0, t0, (20, 36, 44), (4, 8, 12))
    return {"path": path, "vs0": vs0, "t0": t0, "shape0": (20, 36, 44), "chunks": (4, 8, 12)}


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory):
    """The embedded sample dataset, built once per session (read-only for tests)."""
    from cellmap.sample import build_sample

    root = tmp_path_factory.mktemp("sample") / "data"
    build_sample(str(root), quiet=True)
    return str(root)
