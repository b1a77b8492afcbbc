"""Fast reads of index windows of local zarr v2 arrays straight from their chunk files, with the missing-chunk mask.

The converter reads every voxel of every crop once, in z slabs; zarr-python 3's generic path
costs about twice the decoding itself. For the common CellMap case (local store, zarr v2,
C order, no filters, any numcodecs compressor) :class:`WindowReader` opens the chunk files of a
window, decodes them with numcodecs and copies the overlaps, keeping the decoded chunks of a
chunk row the window ends inside for the next slab (so a chunk is decoded about once when slabs
are read in z order; rows above the current window are dropped). A chunk file that does not exist reads as ``fill_value`` and is marked in the returned
mask (a partial ``csc fetch-data``). Anything else falls back to zarr (``cellmap._zarr``) and
``cellmap.io.missing_chunks``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from cellmap import _zarr
from cellmap.io import missing_chunks, window_chunks

__all__ = ["WindowReader", "reader_for"]

_READERS: Dict[str, "WindowReader"] = {}
#: Rows kept above the end of a window for the next one (interpolation taps reach back <= 2 rows).
_MARGIN_ROWS = 2
_LOCK = threading.Lock()


def reader_for(location: str) -> "WindowReader":
    """Per-process cache of readers by array location."""
    with _LOCK:
        r = _READERS.get(location)
        if r is None:
            r = _READERS[location] = WindowReader(location)
        return r


class WindowReader:
    """Read index windows ``[start, stop)`` (z, y, x; inside the array) of one zarr v2 array."""

    def __init__(self, location: str, fast: bool = True):
        """``fast=False`` forces the zarr path (used to cross-check the two)."""
        self.location = location
        self._fast = False
        self._cache: Dict[Tuple[int, ...], Tuple[int, np.ndarray]] = {}
        self._lock = threading.Lock()
        meta = None
        if not _zarr.is_remote(location):
            path = os.path.join(_zarr.local_path(location), ".zarray")
            if os.path.exists(path):
                with open(path, "r", encoding="utf-8") as fh:
                    meta = json.load(fh)
        if fast and meta is not None and meta.get("zarr_format") == 2 and meta.get("order", "C") == "C" \
                and not meta.get("filters") and isinstance(meta.get("dtype"), str):
            import numcodecs

            self.shape = tuple(int(s) for s in meta["shape"])
            self.chunks = tuple(int(c) for c in meta["chunks"])
            self.dtype = np.dtype(meta["dtype"])
            self.fill_value = 0 if meta.get("fill_value") is None else meta["fill_value"]
            self.separator = meta.get("dimension_separator") or "."
            self.codec = numcodecs.get_codec(meta["compressor"]) if meta.get("compressor") else None
            self._base = _zarr.local_path(location)
            self._fast = True
        else:
            self._array = _zarr.open_array(location)
            self.shape = tuple(self._array.shape)
            self.chunks = tuple(self._array.chunks)
            self.dtype = np.dtype(self._array.dtype)

    def _chunk_path(self, idx) -> str:
        if self.separator == "/":
            return os.path.join(self._base, *(str(i) for i in idx))
        return os.path.join(self._base, self.separator.join(str(i) for i in idx))

    def _decode(self, idx) -> Optional[np.ndarray]:
        try:
            with open(self._chunk_path(idx), "rb") as fh:
                buf = fh.read()
        except FileNotFoundError:
            return None
        raw = self.codec.decode(buf) if self.codec is not None else buf
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.chunks)

    def read(self, start: Sequence[int], stop: Sequence[int], with_missing: bool = True
             ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """``(data, missing)``: the window's data (array dtype) and a uint8 mask of voxels whose
        chunk file is absent (None when every chunk is present or ``with_missing`` is False)."""
        start = tuple(int(s) for s in start)
        stop = tuple(int(s) for s in stop)
        if not self._fast:
            data = np.asarray(self._array[tuple(slice(a, b) for a, b in zip(start, stop))])
            miss = None
            if with_missing and not _zarr.is_remote(self.location):
                gone = set(missing_chunks(self.location, start, stop))
                if gone:
                    miss = np.zeros(data.shape, np.uint8)
                    for idx, sl in window_chunks(start, stop, self.chunks, self.shape):
                        if idx in gone:
                            miss[tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, start))] = 1
            return data, miss
        shape_out = tuple(b - a for a, b in zip(start, stop))
        data = np.empty(shape_out, self.dtype)
        miss = None
        first_row = start[0] // self.chunks[0]
        last_row = (max(stop[0] - 1, start[0])) // self.chunks[0]
        cz = self.chunks[0]
        for idx, sl in window_chunks(start, stop, self.chunks, self.shape):
            z_in = sl[0].start - idx[0] * cz          # first chunk row (z) this window needs
            with self._lock:
                hit = self._cache.get(idx)
            block, z_off = None, 0
            if hit is not None and hit[0] <= z_in:
                z_off, block = hit
            else:
                block = self._decode(idx)  # outside the lock: threads decode in parallel
                if block is not None and idx[0] == last_row and (stop[0] % cz):
                    # the next slab starts inside this chunk row: keep the rows it can still need
                    keep_from = max(0, stop[0] - idx[0] * cz - _MARGIN_ROWS)
                    with self._lock:
                        self._cache[idx] = (keep_from, np.ascontiguousarray(block[keep_from:]))
            dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(sl, start))
            if block is None:
                data[dst] = self.fill_value
                if with_missing:
                    if miss is None:
                        miss = np.zeros(shape_out, np.uint8)
                    miss[dst] = 1
                continue
            src = tuple(slice(s.start - i * c - (z_off if d == 0 else 0), s.stop - i * c - (z_off if d == 0 else 0))
                        for d, (s, i, c) in enumerate(zip(sl, idx, self.chunks)))
            data[dst] = block[src]
        with self._lock:  # rows before this window are done with (slabs go in z order)
            for k in [k for k in self._cache if k[0] < first_row]:
                del self._cache[k]
        return data, miss
