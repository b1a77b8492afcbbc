"""InferClass of the tiny template: channel-first probabilities in the input image's space."""

import os
import sys

import torch
from monai.data import MetaTensor

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from pipeline import load_module  # noqa: E402

P = load_module("tinyseg_pipeline", os.path.join(_here, "pipeline.py"))


class InferClass:
    def __init__(self, config_file=None, **override):
        override = {k: v for k, v in override.items() if k not in ("image_save_func",)}
        self.parser = P.read_config(config_file, override)
        keys = ("normalize_mode", "intensity_bounds", "sigmoid", "ckpt_path", "roi_size", "input_channels", "hidden_channels", "output_classes")
        cfg = {k: self.parser.get_parsed_content(k) for k in keys}
        cfg["custom_data_transforms"] = []  # label-side customisations do not apply at inference
        cfg["class_index"] = None
        self.config = cfg
        self.model = P.network(cfg)
        ckpt = os.path.join(cfg["ckpt_path"], "model.pt")
        self.model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        self.model.eval()
        self.transform = P.transforms(cfg, train=False, with_label=False)

    @torch.no_grad()
    def infer(self, image_file):
        item = image_file if isinstance(image_file, dict) else {"image": image_file}
        data = self.transform({"image": item["image"]})
        img = data["image"]
        prob = P.logits_to_prob(self.model(img[None].as_tensor()), bool(self.config["sigmoid"]))[0]
        return MetaTensor(prob, affine=img.affine, meta=img.meta)
