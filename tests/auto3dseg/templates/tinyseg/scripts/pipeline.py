"""Config parsing, transforms and network of the tiny template (shared by train.py and infer.py)."""

import os
import sys

import torch
from monai.bundle import ConfigParser
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandSpatialCropd,
    ScaleIntensityRanged,
    SpatialPadd,
)


def load_module(name, path):
    """Import a sibling script by path under a unique name (bundles share file names)."""
    import importlib.util

    key = f"{name}_{abs(hash(os.path.abspath(path)))}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    spec.loader.exec_module(mod)
    return mod


def read_config(config_file, override):
    """A ConfigParser over the bundle's YAML files (comma-joined str or list) with run overrides applied."""
    if isinstance(config_file, str):
        config_file = [f for f in config_file.split(",") if f]
    parser = ConfigParser()
    parser.read_config(list(config_file))
    parser.update(pairs={k: v for k, v in override.items()})
    return parser


class EmbedClassIndex(MapTransform):
    """Integer label (1, x, y, z) -> C binary channels, channel c = label value in class_index[c] (uint8)."""

    def __init__(self, keys, class_index, allow_missing_keys=True):
        super().__init__(keys, allow_missing_keys)
        self.class_index = class_index

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            chans = [torch.isin(x[0], torch.as_tensor(list(c), device=x.device)) for c in self.class_index]
            d[key] = torch.stack(chans).to(torch.uint8)
        return d


def custom_transforms(config):
    """{stage: [transform, ...]} from `custom_data_transforms` entries {key, path, transform} (SegResNet's form)."""
    out = {}
    for tr in config.get("custom_data_transforms") or []:
        if not all(k in tr for k in ("key", "path", "transform")):
            raise ValueError("custom transform must include ('key', 'path', 'transform')")
        path = os.path.abspath(tr["path"])
        if path not in sys.path:
            sys.path.append(path)
        t = tr["transform"]
        if isinstance(t, dict):
            t = ConfigParser(dict(t)).get_parsed_content(instantiate=True)
        out.setdefault(tr["key"], []).append(t)
    return out


def transforms(config, train, with_label=True):
    """Load -> normalise -> (random crop) -> final transforms, with SegResNet's custom-transform stages."""
    custom = custom_transforms(config)
    keys = ["image", "label"] if with_label else ["image"]
    ts = custom.get("load_transforms") or [
        LoadImaged(keys=keys, ensure_channel_first=True, image_only=True, allow_missing_keys=True),
        EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float, allow_missing_keys=True),
    ]
    ts += custom.get("after_load_transforms", [])
    if config["normalize_mode"] in ("range", "ct"):
        lo, hi = config["intensity_bounds"]
        ts.append(ScaleIntensityRanged(keys="image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    else:
        ts.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    ts += custom.get("after_normalize_transforms", [])
    if train:
        roi = config["roi_size"]
        ts.append(SpatialPadd(keys=keys, spatial_size=roi))
        ts.append(RandSpatialCropd(keys=keys, roi_size=roi, random_size=False))
        ts += custom.get("after_crop_transforms", [])
        ts += custom.get("after_augment_transforms", [])
    final = list(custom.get("final_transforms", []))
    if with_label and isinstance(config.get("class_index"), list) and config["class_index"]:
        final.append(EmbedClassIndex(keys="label", class_index=config["class_index"]))
    return Compose(ts + final)


def network(config):
    """Conv3d(3x3x3) -> ReLU -> Conv3d(1x1x1): input_channels -> hidden_channels -> output_classes."""
    cin, hidden, cout = (int(config[k]) for k in ("input_channels", "hidden_channels", "output_classes"))
    return torch.nn.Sequential(
        torch.nn.Conv3d(cin, hidden, kernel_size=3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(hidden, cout, kernel_size=1)
    )


def logits_to_prob(logits, sigmoid):
    return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=1)
