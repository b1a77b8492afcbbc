"""The `segment` step: saved parameters (best_params.json) applied to new frames, masks written as TIFF."""

import json
from pathlib import Path
from typing import List, Optional, Union

from tqdm.auto import tqdm

from seg2d.cache import FlowCache
from seg2d.errors import ConfigError
from seg2d.io import list_images, mask_dtype, read_image, write_tiff
from seg2d.model import load_model

__all__ = ["read_params", "segment_images"]

PARAM_KEYS = ("diameter", "flow_threshold", "cellprob_threshold", "min_size", "niter", "bsize")


def read_params(params: Union[str, dict]) -> dict:
    """Parameters from a best_params.json path or a dict; ConfigError naming the file when keys are missing."""
    where = "parameters"
    if not isinstance(params, dict):
        where = str(params)
        if not Path(where).is_file():
            raise ConfigError(f"{where}: parameter file not found; pass OUT/best_params.json written by `tune`")
        with open(where, encoding="utf-8") as fh:
            params = json.load(fh)
    missing = [k for k in PARAM_KEYS[:-1] if k not in params]
    if missing:
        raise ConfigError(f"{where}: missing {missing}; expected the keys {list(PARAM_KEYS)} (as `tune` writes)")
    out = {k: params[k] for k in PARAM_KEYS if k in params}
    out.setdefault("bsize", 224)
    out["model"] = params.get("model", {})
    return out


def segment_images(images: str, params: Union[str, dict], out: str, model: Optional[str] = None,
                   tile_px: int = 2048, tile_overlap_px: int = 128, progress: bool = True) -> List[Path]:
    """Segment every TIFF in `images` (a folder or one file) with `params` and write `out/<name>.tif`
    (uint16/uint32 labels). `model` defaults to the weights file recorded in the parameters."""
    p = read_params(params)
    model = model or p["model"].get("path") or p["model"].get("spec")
    if not model:
        raise ConfigError("no model given and none recorded in the parameters; pass --model cyto3|PATH")
    adapter = load_model(model, tile_px=tile_px, tile_overlap_px=tile_overlap_px, progress=progress)
    cache = FlowCache(adapter, memory=False)
    written = []
    for path in tqdm(list_images(images), desc="segment", disable=not progress):
        image = read_image(path)
        flows = cache.get(image, p["diameter"], p["bsize"])
        masks = adapter.masks(flows, p["flow_threshold"], p["cellprob_threshold"], p["min_size"], p["niter"])
        written.append(write_tiff(Path(out) / f"{path.stem}.tif", mask_dtype(masks)))
    return written
