"""The Cellpose model adapter: offline weight resolution, one network pass -> flows, flows -> masks."""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from seg2d.errors import ModelUnavailableError
from seg2d.tiling import tiled_apply

__all__ = ["Flows", "CellposeAdapter", "resolve_model", "load_model", "CELLPOSE_DEFAULTS", "NETWORK_PARAMS",
           "DYNAMICS_PARAMS", "masks_from_flows"]

#: Parameters that change the network input/output (the cache key) vs post-processing only.
NETWORK_PARAMS = ("diameter", "bsize")
DYNAMICS_PARAMS = ("flow_threshold", "cellprob_threshold", "min_size", "niter")
#: Cellpose 3.x eval defaults (diameter: the model's own, filled in by the adapter; niter 0 = Cellpose's rule).
CELLPOSE_DEFAULTS = {"flow_threshold": 0.4, "cellprob_threshold": 0.0, "min_size": 15, "niter": 0, "bsize": 224}

# A complete normalisation dict: never a bool, so Cellpose's module-level `normalize_default` is not mutated
# and nothing left over from another call can switch normalisation off.
NORMALIZE = {"lowhigh": None, "percentile": None, "normalize": True, "norm3D": True, "sharpen_radius": 0,
              "smooth_radius": 0, "tile_norm_blocksize": 0, "tile_norm_smooth3D": 1, "invert": False}
_BUILTIN_FILES = {"cyto": "cytotorch_0", "cyto2": "cyto2torch_0", "nuclei": "nucleitorch_0"}
_CP4_NAMES = ("cpsam", "cpsam_v2", "cpdino", "cpdino-vitb")


@dataclass(frozen=True)
class Flows:
    """Network output for one frame at one diameter: dP (2, y, x) float32, cellprob (y, x) float32 logits,
    at the frame's original size; `niter_default` is Cellpose's niter for this diameter."""

    dP: np.ndarray
    cellprob: np.ndarray
    niter_default: float


@dataclass(frozen=True)
class ResolvedModel:
    """Where weights come from: `path` of a weights file, or `builtin` name found on disk in the model folder."""

    spec: str
    path: str
    builtin: Optional[str] = None


def _model_dir() -> Path:
    from cellpose import models

    return Path(models.MODEL_DIR)


def resolve_model(model: str) -> ResolvedModel:
    """Find the weights for `model` (a file path, or a built-in Cellpose name already in the model folder)
    without any network access. Raises ModelUnavailableError naming `--model PATH` and
    CELLPOSE_LOCAL_MODELS_PATH when a built-in's weights are not on disk (Cellpose would try to download)."""
    spec = str(model)
    path = Path(spec).expanduser()
    if path.is_file():
        return ResolvedModel(spec, str(path.resolve()))
    from cellpose import models

    folder = _model_dir()
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    env_note = f"CELLPOSE_LOCAL_MODELS_PATH is {env!r}" if env else "CELLPOSE_LOCAL_MODELS_PATH is not set"
    if env and Path(env).expanduser() != folder:
        env_note += (f", but cellpose was imported before it was set and uses {folder}; set the variable before "
                     "starting Python")
    if spec in _CP4_NAMES:
        raise ModelUnavailableError(
            f"--model {spec}: a Cellpose 4.x model, but the installed cellpose is 3.x (seg2d's 3.x adapter); "
            "pass --model PATH to a Cellpose 3.x weights file or a 3.x built-in name such as cyto3."
        )
    if spec in models.MODEL_NAMES:
        wanted = folder / _BUILTIN_FILES.get(spec, spec)
        if wanted.is_file():
            return ResolvedModel(spec, str(wanted), builtin=spec)
        raise ModelUnavailableError(
            f"--model {spec}: built-in Cellpose weights not on disk (looked for {wanted}); Cellpose would "
            "download them from www.cellpose.org, which is not possible offline. Pass --model PATH to a weights "
            f"file (e.g. from `seg2d train`), or copy the file '{wanted.name}' into the folder named by the "
            f"CELLPOSE_LOCAL_MODELS_PATH environment variable ({env_note})."
        )
    if (folder / spec).is_file():  # a user model registered in the model folder
        return ResolvedModel(spec, str(folder / spec))
    raise ModelUnavailableError(
        f"--model {spec}: no such weights file and not a Cellpose 3.x built-in name (Cellpose itself would "
        f"silently fall back to downloading cyto3). Pass --model PATH to an existing weights file, or a "
        f"built-in name ({', '.join(models.MODEL_NAMES[:4])}, ...) whose file is in the folder named by "
        f"CELLPOSE_LOCAL_MODELS_PATH ({env_note})."
    )


def masks_from_flows(flows: Flows, flow_threshold: float = 0.4, cellprob_threshold: float = 0.0,
                     min_size: int = 15, niter: int = 0, max_size_fraction: float = 0.4, device=None) -> np.ndarray:
    """Cellpose 3.x mask dynamics (`dynamics.resize_and_compute_masks`) on Flows: labels (y, x), uint16 or
    uint32. niter 0 = Cellpose's default for the diameter (`Flows.niter_default`)."""
    import torch
    from cellpose import dynamics

    niter_used = flows.niter_default if not niter else int(niter)
    return dynamics.resize_and_compute_masks(
        flows.dP, flows.cellprob, niter=niter_used, cellprob_threshold=float(cellprob_threshold),
        flow_threshold=float(flow_threshold), interp=True, min_size=int(min_size),
        max_size_fraction=max_size_fraction, resize=None, device=device or torch.device("cpu"))


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CellposeAdapter:
    """Cellpose 3.x behind the three calls seg2d needs (a 4.x `cpsam` adapter would implement the same):
    `network` (image -> Flows, the expensive part), `masks` (Flows -> labels, the dynamics), and `segment`
    (a full Cellpose `eval` per call: the plain, uncached path). Images are float32 (y, x) grayscale."""

    line = "cellpose3"

    def __init__(self, model: str, gpu: bool = False, tile_px: int = 2048, tile_overlap_px: int = 128,
                 progress: bool = True):
        from cellpose import models
        import cellpose

        self.resolved = resolve_model(model)
        if self.resolved.builtin:
            self.cp = models.CellposeModel(gpu=gpu, model_type=self.resolved.builtin)
        else:
            self.cp = models.CellposeModel(gpu=gpu, pretrained_model=self.resolved.path)
        self.model_sha256 = _sha256(self.resolved.path)
        self.cellpose_version = getattr(cellpose, "version", None) or _dist_version("cellpose")
        self.tile_px, self.tile_overlap_px, self.progress = int(tile_px), int(tile_overlap_px), progress

    @property
    def diam_mean(self) -> float:
        return float(self.cp.diam_mean)

    @property
    def default_diameter(self) -> float:
        """Diameter (px) Cellpose uses when none is given: the mean diameter of the model's training labels."""
        return round(float(self.cp.diam_labels), 2)

    def defaults(self) -> Dict[str, float]:
        """Cellpose's eval defaults for this model, as seg2d parameters."""
        return {"diameter": self.default_diameter, **CELLPOSE_DEFAULTS}

    def describe(self) -> Dict[str, object]:
        return {"spec": self.resolved.spec, "path": self.resolved.path, "builtin": self.resolved.builtin,
                "sha256": self.model_sha256, "adapter": self.line, "diam_mean": self.diam_mean,
                "diam_labels": float(self.cp.diam_labels)}

    def cache_token(self) -> str:
        """Identity of everything besides (frame, diameter, bsize) that changes the network output."""
        return f"{self.line}:{self.model_sha256}:norm=1-99:resample=1:aug=0:overlap=0.1:tile={self.tile_px}"

    def _niter_default(self, diameter: float) -> float:
        rescale = self.cp.diam_mean / diameter  # Cellpose: niter = 1/rescale * 200 with resample=True
        return 1 / rescale * 200

    def _eval_kwargs(self, diameter: float, bsize: int) -> dict:
        return dict(channels=[0, 0], diameter=float(diameter), bsize=int(bsize), resample=True,
                    augment=False, tile_overlap=0.1, normalize=dict(NORMALIZE))

    def network(self, image: np.ndarray, diameter: float, bsize: int = 224) -> Flows:
        """Run the network once: float32 flows dP (2, y, x) and cellprob (y, x) at the image's size.
        Images with a side above `tile_px` are processed in overlapping tiles (normalised as a whole first)."""
        image = np.asarray(image, dtype=np.float32)
        if max(image.shape) <= self.tile_px:
            _, flows, _ = self.cp.eval(image, compute_masks=False, **self._eval_kwargs(diameter, bsize))
            dP, cellprob = flows[1], flows[2]
        else:
            from cellpose.transforms import normalize99

            normed = normalize99(image).astype(np.float32)
            kwargs = self._eval_kwargs(diameter, bsize)
            kwargs["normalize"] = {**NORMALIZE, "normalize": False}

            def one_tile(tile):
                _, fl, _ = self.cp.eval(tile, compute_masks=False, **kwargs)
                return np.concatenate([fl[1], fl[2][None]], axis=0)

            stacked = tiled_apply(normed, one_tile, self.tile_px, self.tile_overlap_px, progress=self.progress)
            dP, cellprob = stacked[:2], stacked[2]
        return Flows(np.ascontiguousarray(dP, dtype=np.float32), np.ascontiguousarray(cellprob, dtype=np.float32),
                     self._niter_default(diameter))

    def masks(self, flows: Flows, flow_threshold: float = 0.4, cellprob_threshold: float = 0.0,
              min_size: int = 15, niter: int = 0, max_size_fraction: float = 0.4) -> np.ndarray:
        """Cellpose's mask dynamics on cached flows (bit-identical to `eval`); niter 0 = Cellpose's default."""
        return masks_from_flows(flows, flow_threshold, cellprob_threshold, min_size, niter, max_size_fraction,
                                device=self.cp.device)

    def segment(self, image: np.ndarray, params: Dict[str, float]) -> np.ndarray:
        """One full Cellpose `eval` (network + dynamics) with `params`: the uncached path."""
        p = {**self.defaults(), **params}
        kwargs = self._eval_kwargs(p["diameter"], p["bsize"])
        masks, _, _ = self.cp.eval(np.asarray(image, dtype=np.float32), flow_threshold=float(p["flow_threshold"]),
                                   cellprob_threshold=float(p["cellprob_threshold"]), min_size=int(p["min_size"]),
                                   niter=int(p["niter"]) or None, **kwargs)
        return masks


def _dist_version(name: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def load_model(model: str, **kwargs) -> CellposeAdapter:
    """The adapter for the installed Cellpose line (3.x now; a 4.x `cpsam` adapter plugs in here)."""
    major = (_dist_version("cellpose") or "3").split(".")[0]
    if major != "3":
        raise ModelUnavailableError(
            f"cellpose {_dist_version('cellpose')} is installed, but seg2d has only the Cellpose 3.x adapter; "
            "install 'cellpose>=3.1,<4'."
        )
    return CellposeAdapter(model, **kwargs)
