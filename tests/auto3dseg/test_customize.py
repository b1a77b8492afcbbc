"""auto3dseg.customize: the input keys and the idempotent post-generation edits of generated bundles."""

import copy
import json
import os

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from auto3dseg import customize
from auto3dseg.errors import Auto3DSegError
from auto3dseg.partial_loss import MaskedDiceBCELoss
from auto3dseg.partial_transforms import UNKNOWN, PartialLabelToChannelsd

DATALIST = {
    "sigmoid": True,
    "ignore_value": 255,
    "class_names": [{"name": "ecs", "index": [1]}, {"name": "mito", "index": [3, 4]}],
    "training": [],
}
CONFIG = {"training": {"partial_annotation": True}}


def _entry(mode, partial=True, keys="label"):
    return {
        "_target_": "auto3dseg.partial_transforms.PartialLabelToChannelsd",
        "keys": keys,
        "class_index": [[1], [3, 4]],
        "ignore_value": 255,
        "annotated_key": "annotated",
        "mode": mode,
        "partial": partial,
    }


EXPECTED_KEYS = {
    "sigmoid": True,
    "class_names": ["ecs", "mito"],
    "output_classes": 2,
    "crop_ratios": [1.0] * 5,
    "loss": {
        "_target_": "auto3dseg.partial_loss.MaskedDiceBCELoss",
        "squared_pred": True,
        "smooth_nr": 0.0,
        "smooth_dr": 1.0e-5,
    },
    "metric": {"_target_": "auto3dseg.partial_metric.MaskedDice"},
}
EXPECTED_TRANSFORMS = [
    {"key": "after_augment_transforms", "transform": _entry("loss")},
    {"key": "final_transforms", "transform": _entry("metric")},
]
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(customize.__file__)))


def _without_paths(entries):
    assert {e.pop("path") for e in entries} == {PACKAGE_PARENT}
    return entries


def test_input_overrides_exactly():
    # segresnet: custom_data_transforms cannot go through input.yaml (export_to_disk copies the module from a
    # cwd-relative path); after_generation writes it
    assert customize.input_overrides("segresnet", CONFIG, DATALIST) == EXPECTED_KEYS
    tiny = customize.input_overrides("tinyseg", CONFIG, DATALIST)
    assert _without_paths(tiny.pop("custom_data_transforms")) == EXPECTED_TRANSFORMS
    assert tiny == EXPECTED_KEYS


def test_overrides_instantiate_as_segresnet_does():
    got = customize.input_overrides("tinyseg", CONFIG, DATALIST)
    loss = ConfigParser(got["loss"]).get_parsed_content(instantiate=True)
    assert isinstance(loss, MaskedDiceBCELoss)
    for e in got["custom_data_transforms"]:
        t = ConfigParser(copy.deepcopy(e["transform"])).get_parsed_content(instantiate=True)
        assert isinstance(t, PartialLabelToChannelsd) and t.class_index == [[1], [3, 4]]


def test_plain_switch_and_bad_values():
    plain = customize.input_overrides("tinyseg", {"training": {"partial_annotation": False}}, DATALIST)
    assert [e["transform"]["partial"] for e in plain["custom_data_transforms"]] == [False, False]
    assert customize.input_overrides("tinyseg", {}, DATALIST)["custom_data_transforms"][0]["transform"]["partial"]
    with pytest.raises(Auto3DSegError, match="partial_annotation must be true or false"):
        customize.input_overrides("segresnet", {"training": {"partial_annotation": "yes"}}, DATALIST)
    with pytest.raises(Auto3DSegError, match="class_names"):
        customize.input_overrides("segresnet", CONFIG, {"class_names": ["ecs"]})


def test_unknown_algo_is_left_alone(tmp_path):
    assert customize.input_overrides("dints", CONFIG, DATALIST) == {}
    customize.after_generation(str(tmp_path / "missing"), "dints", CONFIG, DATALIST)  # no error, nothing made
    assert not (tmp_path / "missing").exists()


def _read_all(folder):
    return {p: open(os.path.join(folder, p)).read() for p in sorted(os.listdir(folder))}


def test_segresnet_after_generation_is_idempotent(tmp_path):
    configs = tmp_path / "segresnet_0" / "configs"
    configs.mkdir(parents=True)
    hp = {"fold": 0, "class_index": [[1], [3, 4]], "loss": {"_target_": "DiceCELoss"}, "roi_size": [32, 32, 32]}
    (configs / "hyper_parameters.yaml").write_text(yaml.safe_dump(hp))
    customize.after_generation(str(tmp_path / "segresnet_0"), "segresnet", CONFIG, DATALIST)
    first = _read_all(configs)
    customize.after_generation(str(tmp_path / "segresnet_0"), "segresnet", CONFIG, DATALIST)
    assert _read_all(configs) == first
    doc = yaml.safe_load(first["hyper_parameters.yaml"])
    assert doc["class_index"] is None and doc["roi_size"] == [32, 32, 32] and doc["fold"] == 0
    assert doc["loss"]["_target_"] == customize.LOSS_TARGET and doc["output_classes"] == 2
    assert _without_paths(doc["custom_data_transforms"]) == EXPECTED_TRANSFORMS


# The structure MONAI's SwinUNETR template (21ed8e5) generates for sigmoid + class_names with index lists:
# step 2 intensity, step 5 a Compose that embeds the whole label into channels, step 9 a crop Compose that
# references @patch_size / @num_patches_per_image (never defined). Written here by hand for the test.
def _swin_transforms(name, with_crop):
    steps = [
        {"_target_": "LoadImaged", "keys": ["@image_key", "@label_key"], "image_only": True},
        {"_target_": "EnsureChannelFirstd", "keys": ["@image_key", "@label_key"]},
        {"_target_": "NormalizeIntensityd", "keys": "@image_key", "nonzero": True, "channel_wise": True},
        {"_target_": "Orientationd", "keys": ["@image_key", "@label_key"], "axcodes": "RAS"},
        {"_target_": "Identityd", "keys": ["@image_key"]},
        {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "CastToTyped", "keys": ["@image_key", "@label_key"], "dtype": ["$torch.float32", "$torch.uint8"]},
                {"_target_": "Lambdad", "keys": "@label_key", "func": "$lambda x: torch.cat([sum([x == i for i in c]) for c in [[1], [3, 4]]], dim=0).to(dtype=x.dtype)"},
            ],
        },
        {"_target_": "EnsureTyped", "keys": ["@image_key", "@label_key"], "track_meta": True},
    ]
    if with_crop:
        steps += [
            {"_target_": "SpatialPadd", "keys": ["@image_key", "@label_key"], "spatial_size": "@roi_size"},
            {"_target_": "Identityd", "keys": ["@label_key"]},
            {
                "_target_": "Compose",
                "transforms": [
                    {"_target_": "CopyItemsd", "keys": "@label_key", "times": 1, "names": "crop_label"},
                    {"_target_": "RandCropByLabelClassesd", "keys": ["@image_key", "@label_key"], "label_key": "crop_label",
                     "num_classes": None, "spatial_size": "@patch_size", "num_samples": "@num_patches_per_image"},
                ],
            },
            {"_target_": "RandFlipd", "keys": ["@image_key", "@label_key"], "prob": 0.2, "spatial_axis": 0},
        ]
    return {"image_key": "image", "label_key": "label", name: {"_target_": "Compose", "transforms": steps}}


@pytest.fixture
def swin_bundle(tmp_path):
    configs = tmp_path / "swinunetr_0" / "configs"
    configs.mkdir(parents=True)
    hp = {
        "bundle_root": str(tmp_path / "swinunetr_0"),
        "roi_size": [8, 8, 8],
        "num_crops_per_image": 2,
        "output_classes": 4,
        "softmax": True,
        "class_names": DATALIST["class_names"],
        "valid_at_orig_resolution_at_last": True,
        "loss": {"_target_": "DiceCELoss", "sigmoid": "$not @softmax"},
    }
    (configs / "hyper_parameters.yaml").write_text(yaml.safe_dump(hp))
    (configs / "transforms_train.yaml").write_text(yaml.safe_dump(_swin_transforms("transforms_train", True)))
    (configs / "transforms_validate.yaml").write_text(yaml.safe_dump(_swin_transforms("transforms_validate", False)))
    (configs / "transforms_infer.yaml").write_text("transforms_infer: {_target_: Compose, transforms: []}\n")
    return tmp_path / "swinunetr_0"


def test_swinunetr_after_generation_edits_and_is_idempotent(swin_bundle):
    configs = swin_bundle / "configs"
    infer_before = (configs / "transforms_infer.yaml").read_text()
    customize.after_generation(str(swin_bundle), "swinunetr", CONFIG, DATALIST)
    first = _read_all(configs)
    customize.after_generation(str(swin_bundle), "swinunetr", CONFIG, DATALIST)
    assert _read_all(configs) == first
    assert first["transforms_infer.yaml"] == infer_before

    hp = yaml.safe_load(first["hyper_parameters.yaml"])
    assert hp["loss"]["_target_"] == customize.LOSS_TARGET
    assert hp["softmax"] is False and hp["output_classes"] == 2 and hp["class_names"] == ["ecs", "mito"]
    assert hp["patch_size"] == "@roi_size" and hp["num_patches_per_image"] == "@num_crops_per_image"
    assert hp["valid_at_orig_resolution_at_last"] is False
    for name, mode in (("transforms_train", "loss"), ("transforms_validate", "metric")):
        text = first[f"{name}.yaml"]
        assert "Lambdad" not in text and "patch_size" not in text
        steps = yaml.safe_load(text)[name]["transforms"]
        assert steps[-1] == _entry(mode, keys="@label_key")
        assert sum(customize.TRANSFORM_TARGET in json.dumps(s) for s in steps) == 1


def test_edited_swinunetr_configs_run_on_a_real_nifti_pair(swin_bundle, tmp_path):
    from synth_nifti import make_case, write_nifti
    import numpy as np

    img, lab = make_case(np.random.default_rng(0), (12, 12, 12), labels=(1, 3))
    lab[0, 0, 0] = 4
    lab[:, :, -2:] = 255
    item = {
        "image": write_nifti(str(tmp_path / "img.nii.gz"), img),
        "label": write_nifti(str(tmp_path / "lab.nii.gz"), lab),
        "annotated": 0b01,  # only ecs annotated
    }
    customize.after_generation(str(swin_bundle), "swinunetr", CONFIG, DATALIST)
    configs = swin_bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / f) for f in ("hyper_parameters.yaml", "transforms_train.yaml", "transforms_validate.yaml")])
    train = parser.get_parsed_content("transforms_train")
    train.set_random_state(0)
    patches = train(dict(item))
    assert len(patches) == 2
    for p in patches:
        target = p["label"]
        assert tuple(target.shape) == (2, 8, 8, 8) and target.dtype == torch.uint8
        assert target[1].eq(UNKNOWN).all()  # mito not annotated in this crop
    val = parser.get_parsed_content("transforms_validate")(dict(item))["label"]
    assert tuple(val.shape) == (3, 12, 12, 12) and val.dtype == torch.uint8
    assert int(val[1].sum()) == 0 and int(val[2].sum()) == 12 * 12 * 2  # mito zeroed; ignore channel
    loss = parser.get_parsed_content("loss")
    assert isinstance(loss, MaskedDiceBCELoss)


def test_swinunetr_template_drift_is_reported(swin_bundle):
    path = swin_bundle / "configs" / "transforms_train.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["transforms_train"]["transforms"] = [s for s in doc["transforms_train"]["transforms"] if s["_target_"] != "Compose"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(Auto3DSegError, match="transforms_train.yaml: no RandCropByLabelClassesd"):
        customize.after_generation(str(swin_bundle), "swinunetr", CONFIG, DATALIST)


def test_ci_template_generation_trains_with_our_loss_and_targets(synthetic_datalist, tmp_path):
    """MONAI BundleGen with the CI template through run_auto3dseg's generate: the bundle's own training
    pipeline yields our masked uint8 targets and its config instantiates our loss and metric."""
    from synth_nifti import TINY_TEMPLATES

    from auto3dseg.bundles import generate
    from auto3dseg.rundata import load_run_datalist

    work = tmp_path / "work"
    work.mkdir()
    stats = {  # the keys the CI template reads from datastats.yaml
        "stats_summary": {
            "image_stats": {"channels": {"max": 1}},
            "image_foreground_stats": {"intensity": {"percentile_00_5": 1.0, "percentile_99_5": 250.0}},
            "label_stats": {"labels": [0, 1, 2, 3, 255]},
            "n_cases": 4,
        }
    }
    (work / "datastats.yaml").write_text(yaml.safe_dump(stats))
    dl = load_run_datalist(synthetic_datalist)
    (bundle,) = generate(dl, str(work), ["tinyseg"], TINY_TEMPLATES, {"modality": "mri", "input": {}}, num_fold=1)
    configs = os.path.join(bundle, "configs")
    hp = yaml.safe_load(open(os.path.join(configs, "hyper_parameters.yaml")))
    assert hp["loss"]["_target_"] == customize.LOSS_TARGET and not hp["class_index"] and hp["output_classes"] == 3

    import importlib.util

    spec = importlib.util.spec_from_file_location("tinyseg_pipeline_customize", os.path.join(bundle, "scripts", "pipeline.py"))
    pipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pipe)
    parser = pipe.read_config([os.path.join(configs, "hyper_parameters.yaml")], {})
    config = {k: parser.get_parsed_content(k) for k in ("normalize_mode", "intensity_bounds", "roi_size", "class_index")}
    config["custom_data_transforms"] = parser.get("custom_data_transforms")
    assert isinstance(parser.get_parsed_content("loss"), MaskedDiceBCELoss)
    raw = json.load(open(synthetic_datalist))
    root = os.path.dirname(synthetic_datalist)
    case = next(c for c in raw["training"] if c["annotated"] == 0b110)  # ecs not annotated in this crop
    item = {"image": os.path.join(root, case["image"]), "label": os.path.join(root, case["label"]), "annotated": case["annotated"]}
    train = pipe.transforms(config, train=True)(dict(item))
    assert train["label"].dtype == torch.uint8 and tuple(train["label"].shape) == (3, *hp["roi_size"])
    assert train["label"][0].eq(UNKNOWN).all()
    val = pipe.transforms(config, train=False)(dict(item))
    assert val["label"].shape[0] == 4 and int(val["label"][0].sum()) == 0


_TEMPLATES = os.environ.get("AUTO3DSEG_TEMPLATES", "")
needs_templates = pytest.mark.skipif(
    not os.path.isfile(os.path.join(_TEMPLATES, "segresnet", "scripts", "segmenter.py")),
    reason="needs MONAI's algorithm templates in a local folder: set AUTO3DSEG_TEMPLATES (hash 21ed8e5)",
)


@pytest.fixture(scope="module")
def analyzed(synthetic_datalist, tmp_path_factory):
    """A work_dir with datastats.yaml of the synthetic data, and the run config."""
    from auto3dseg.run_auto3dseg import run

    root = tmp_path_factory.mktemp("real_templates")
    config = root / "auto3dseg.yaml"
    config.write_text(yaml.safe_dump({"input": {"roi_size": [16, 16, 16]}}))
    work = str(root / "work")
    run(mode="analyze", datalist=synthetic_datalist, work_dir=work, config=str(config))
    return work, str(config)


def _real_item(synthetic_datalist, annotated):
    raw = json.load(open(synthetic_datalist))
    root = os.path.dirname(synthetic_datalist)
    case = next(c for c in raw["training"] if c["annotated"] == annotated)
    return {"image": os.path.join(root, case["image"]), "label": os.path.join(root, case["label"]), "annotated": annotated}


@needs_templates
def test_real_swinunetr_template_after_generation(analyzed, synthetic_datalist, monkeypatch):
    """MONAI's SwinUNETR template generated on CPU (its GPU-memory probe answered with 24 GiB), edited by
    after_generation, parsed as its train.py does (all config files) and run on a real NIfTI pair."""
    import glob

    from auto3dseg.run_auto3dseg import run

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (24 * 2**30, 24 * 2**30))
    work, config = analyzed
    run(mode="generate", datalist=synthetic_datalist, work_dir=work, config=config, algos="swinunetr",
        templates=_TEMPLATES, num_fold=1, insist_swinunetr=True)
    configs = os.path.join(work, "swinunetr_0", "configs")
    first = _read_all(configs)
    customize.after_generation(os.path.dirname(configs), "swinunetr", {}, json.load(open(synthetic_datalist)))
    assert _read_all(configs) == first  # already applied by generate: a second application changes nothing
    parser = ConfigParser()
    parser.read_config(sorted(glob.glob(os.path.join(configs, "*.yaml"))))
    assert isinstance(parser.get_parsed_content("loss"), MaskedDiceBCELoss)
    assert parser.get_parsed_content("patch_size") == parser.get_parsed_content("roi_size")
    item = _real_item(synthetic_datalist, 0b110)  # ecs not annotated
    patches = parser.get_parsed_content("transforms_train")(dict(item))
    roi = parser.get_parsed_content("roi_size")
    for p in patches:
        assert p["label"].dtype == torch.uint8 and tuple(p["label"].shape) == (3, *roi)
        assert p["label"][0].eq(UNKNOWN).all()
    val = parser.get_parsed_content("transforms_validate")(dict(item))["label"]
    assert val.shape[0] == 4 and int(val[0].sum()) == 0


@needs_templates
def test_real_segresnet_template_consumes_our_keys(analyzed, synthetic_datalist):
    """Generate a real SegResNet bundle, then build its own data transforms and loss (segmenter.py) on CPU."""
    import importlib
    import sys

    from auto3dseg.run_auto3dseg import run

    work, config = analyzed
    run(mode="generate", datalist=synthetic_datalist, work_dir=work, config=config, algos="segresnet",
        templates=_TEMPLATES, num_fold=1)
    bundle = os.path.join(work, "segresnet_0")
    before = set(sys.modules)
    sys.path.insert(0, os.path.join(bundle, "scripts"))
    try:
        segmenter = importlib.import_module("segmenter")  # it imports its sibling `utils` by plain name
    finally:
        sys.path.pop(0)
        for name in ("segmenter", "utils"):
            if name not in before:
                sys.modules.pop(name, None)

    class Probe(segmenter.Segmenter):  # only the config and transform-building parts of the real Segmenter
        def __init__(self):
            self.global_rank, self.rank, self.distributed, self._data_transform_builder = 1, 0, False, None

    probe = Probe()
    probe.config = probe.parse_input_config(
        config_file=os.path.join(bundle, "configs", "hyper_parameters.yaml"), override={"crop_mode": "ratio"}
    )
    assert probe.config["class_index"] is None and probe.config["output_classes"] == 3
    loss = ConfigParser(probe.config["loss"]).get_parsed_content(instantiate=True)
    assert isinstance(loss, MaskedDiceBCELoss)
    item = _real_item(synthetic_datalist, 0b001)  # only ecs annotated
    builder = probe.get_data_transform_builder()
    train = builder(augment=True)
    train.set_random_state(0)
    patches = train(dict(item))
    for p in patches if isinstance(patches, list) else [patches]:
        assert p["label"].dtype == torch.uint8 and tuple(p["label"].shape) == (3, 16, 16, 16)
        assert p["label"][1:].eq(UNKNOWN).all()
    val = builder(augment=False)(dict(item))["label"]
    assert val.shape[0] == 4 and int(val[1:3].sum()) == 0
