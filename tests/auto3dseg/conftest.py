"""Shared fixtures of the auto3dseg tests: small synthetic converted-data sets and the tiny template."""

import pytest

from synth_nifti import TINY_TEMPLATES, make_dataset


@pytest.fixture(scope="module")
def synthetic_datalist(tmp_path_factory):
    """datalist.json of 4 synthetic 24^3 cases (2 folds, different label sets, an ignore slab) + 1 test image."""
    return make_dataset(str(tmp_path_factory.mktemp("nifti")))


@pytest.fixture
def tiny_templates():
    """Folder holding the tiny `tinyseg` Auto3DSeg template (a real BundleAlgo, CPU)."""
    return TINY_TEMPLATES
