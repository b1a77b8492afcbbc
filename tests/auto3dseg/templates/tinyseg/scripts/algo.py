"""TinysegAlgo: fills the tiny template from input.yaml and the data statistics (like SegResNet's algo)."""

import copy
import os

import yaml
from monai.apps.auto3dseg import BundleAlgo
from monai.bundle import ConfigParser

# keys this algo consumes itself; every other input.yaml key is written verbatim into hyper_parameters.yaml
_CONSUMED = ("dataroot", "datalist", "class_names", "class_index", "sigmoid", "name", "task")


class TinysegAlgo(BundleAlgo):
    """A real BundleAlgo whose training is a 2-layer 3D conv net on CPU."""

    def fill_template_config(self, data_stats_filename, output_path, **kwargs):
        with open(self.data_list_file) as fh:
            inp = yaml.safe_load(fh)
        stats = ConfigParser(globals=False)
        stats.read_config(data_stats_filename)
        config = {
            "bundle_root": output_path,
            "data_file_base_dir": os.path.abspath(inp["dataroot"]),
            "data_list_file_path": os.path.abspath(inp["datalist"]),
            "fold": int(kwargs.get("fold", 0)),
            "input_channels": int(stats["stats_summary#image_stats#channels#max"]),
            "intensity_bounds": [
                float(stats["stats_summary#image_foreground_stats#intensity#percentile_00_5"]),
                float(stats["stats_summary#image_foreground_stats#intensity#percentile_99_5"]),
            ],
        }
        class_names = inp.get("class_names")
        sigmoid = bool(inp.get("sigmoid", False))
        if isinstance(class_names, list) and class_names and isinstance(class_names[0], dict):
            config["class_names"] = [c["name"] for c in class_names]
            config["class_index"] = inp.get("class_index", [list(c["index"]) for c in class_names])
        else:
            config["class_names"] = class_names
            config["class_index"] = inp.get("class_index")
        if sigmoid and config["class_index"]:
            config["output_classes"] = len(config["class_index"])
        else:
            config["output_classes"] = len(stats["stats_summary#label_stats#labels"])
        config["sigmoid"] = sigmoid
        config.update({k: copy.deepcopy(v) for k, v in inp.items() if k not in _CONSUMED})

        path = os.path.join(output_path, "configs", "hyper_parameters.yaml")
        parser = ConfigParser(globals=False)
        parser.read_config(path)
        for k, v in config.items():
            parser[k] = v
        ConfigParser.export_config_file(parser.get(), path, fmt="yaml", default_flow_style=None, sort_keys=False)
        return {"hyper_parameters.yaml": config}
