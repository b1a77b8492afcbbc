"""`--mode full` with MONAI's own SegResNet template from a local folder, on CPU with tiny settings.

Set AUTO3DSEG_TEMPLATES to a folder holding `segresnet/` (e.g. research-contributions
auto3dseg/algorithm_templates at commit 21ed8e5). Skipped otherwise: CI has no network for the download.
"""

import json
import os
import time

import nibabel as nib
import pytest
import yaml

from auto3dseg.run_auto3dseg import run
from synth_nifti import make_dataset

TEMPLATES = os.environ.get("AUTO3DSEG_TEMPLATES", "")

pytestmark = [
    pytest.mark.real_templates,
    pytest.mark.skipif(
        not os.path.isfile(os.path.join(TEMPLATES, "segresnet", "scripts", "algo.py")),
        reason="AUTO3DSEG_TEMPLATES is not set to a folder with MONAI's segresnet template",
    ),
]


def test_full_run_with_segresnet(tmp_path):
    datalist = make_dataset(str(tmp_path / "nifti"), n=4, shape=(32, 32, 32))
    config = tmp_path / "auto3dseg.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "input": {
                    "network#init_filters": 8,  # tiny SegResNetDS
                    "roi_size": [32, 32, 32],
                    "auto_scale_allowed": False,
                    "cache_rate": 0,
                    "num_workers": 0,
                    "num_epochs_per_validation": 1,
                    "validate_final_original_res": False,
                },
            }
        )
    )
    work = str(tmp_path / "work_dir")
    start = time.time()
    out = run(mode="full", datalist=datalist, work_dir=work, config=str(config), algos="segresnet",
              templates=TEMPLATES, num_epochs=2)
    elapsed = time.time() - start
    assert sorted(out["train"]) == ["segresnet_0", "segresnet_1"]
    for name, score in out["train"].items():
        assert 0.0 <= score <= 1.0, name
    hp = yaml.safe_load(open(os.path.join(work, "segresnet_0", "configs", "hyper_parameters.yaml")))
    assert hp["crop_foreground"] is False and hp["sigmoid"] is True and hp["modality"] == "mri"
    assert hp["num_epochs"] != 2  # the run override did not persist
    pred = nib.load(out["ensemble"][0])
    assert pred.shape == (32, 32, 32, 3)
    print(f"segresnet full run: {elapsed:.0f} s, scores {out['train']}")

    # an interrupted fold (killed before its run finished: no score recorded) continues from model_final.pt
    obj = os.path.join(work, "segresnet_0", "algo_object.json")
    with open(obj) as fh:
        state = json.load(fh)
    state.pop("best_metric")
    with open(obj, "w") as fh:
        json.dump(state, fh)
    again = run(mode="train", datalist=datalist, work_dir=work, config=str(config), algos="segresnet",
                templates=TEMPLATES, num_epochs=4)
    assert list(again) == ["segresnet_0"]  # segresnet_1 finished: skipped
    with open(os.path.join(work, "segresnet_0", "model", "accuracy_history.csv")) as fh:
        epochs = [int(line.split("\t")[0]) for line in fh if line[:1].isdigit()]
    assert epochs and min(epochs[-2:]) >= 2  # the second run started after the 2 epochs of the first
