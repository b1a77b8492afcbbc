"""Cache of network outputs (flows, cellprob) per (frame, diameter, bsize, model), in memory and optionally on disk."""

import hashlib
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from seg2d.io import write_atomic
from seg2d.model import Flows

__all__ = ["FlowCache"]


def _image_digest(image: np.ndarray) -> str:
    arr = np.ascontiguousarray(image)
    h = hashlib.sha256(arr.tobytes())
    h.update(f"{arr.shape}{arr.dtype}".encode())
    return h.hexdigest()[:24]


class FlowCache:
    """`get(image, diameter, bsize)` runs `adapter.network` once per key and then returns the stored Flows.

    memory: keep Flows in RAM (12 bytes per pixel per diameter); disk_dir: also store `<key>.npz` there
    (written atomically) so later runs and other workers skip the network. With both off, every call runs the
    network (the slow path, where pruning pays)."""

    def __init__(self, adapter, memory: bool = True, disk_dir: Optional[str] = None):
        self.adapter = adapter
        self.memory = memory
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self._store: Dict[str, Flows] = {}
        self._digests: Dict[int, Tuple[object, str]] = {}
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0
        self.network_seconds = 0.0

    def key(self, image: np.ndarray, diameter: float, bsize: int) -> str:
        ident = self._digests.get(id(image))
        if ident is None or ident[0] is not image:
            ident = (image, _image_digest(image))
            self._digests[id(image)] = ident
        raw = f"{ident[1]}|d={float(diameter):.4f}|b={int(bsize)}|{self.adapter.cache_token()}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def contains(self, image: np.ndarray, diameter: float, bsize: int) -> bool:
        """True when Flows for this key are in memory or on disk (no network needed)."""
        k = self.key(image, diameter, bsize)
        return k in self._store or (self.disk_dir is not None and (self.disk_dir / f"{k}.npz").is_file())

    def get(self, image: np.ndarray, diameter: float, bsize: int = 224) -> Flows:
        k = self.key(image, diameter, bsize)
        if k in self._store:
            self.hits += 1
            return self._store[k]
        flows = self._load(k)
        if flows is not None:
            self.disk_hits += 1
        else:
            self.misses += 1
            t0 = time.perf_counter()
            flows = self.adapter.network(image, diameter, bsize)
            self.network_seconds += time.perf_counter() - t0
            self._save(k, flows)
        if self.memory:
            self._store[k] = flows
        return flows

    def _load(self, k: str) -> Optional[Flows]:
        if self.disk_dir is None:
            return None
        path = self.disk_dir / f"{k}.npz"
        if not path.is_file():
            return None
        with np.load(path) as z:
            return Flows(z["dP"], z["cellprob"], float(z["niter_default"]))

    def _save(self, k: str, flows: Flows) -> None:
        if self.disk_dir is None:
            return
        write_atomic(self.disk_dir / f"{k}.npz", lambda tmp: np.savez(
            tmp, dP=flows.dP, cellprob=flows.cellprob, niter_default=np.float64(flows.niter_default)), suffix=".npz")

    def stats(self) -> Dict[str, float]:
        return {"memory_hits": self.hits, "disk_hits": self.disk_hits, "network_runs": self.misses,
                "network_seconds": round(self.network_seconds, 3)}
