"""Tiled evaluation of a per-pixel function over a large 2D image, stitched from tile centres, with progress."""

from typing import Callable, List, Tuple

import numpy as np
from tqdm.auto import tqdm

__all__ = ["tile_starts", "tiled_apply"]


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` px shared between
    neighbours; the last tile ends at `length`."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return sorted(set(starts))


def _inner(start: int, length: int, tile: int, starts: List[int], i: int) -> Tuple[int, int]:
    """The part of tile i (global coordinates) that this tile owns: cut halfway into each overlap."""
    lo = start if i == 0 else (start + starts[i - 1] + tile) // 2
    hi = start + tile if i == len(starts) - 1 else (starts[i + 1] + start + tile) // 2
    return lo, min(hi, length)


def tiled_apply(image: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], tile: int, overlap: int,
                progress: bool = True, desc: str = "network tiles") -> np.ndarray:
    """Apply `fn` to overlapping (tile x tile) windows of `image` (y, x) and stitch its (C, h, w) outputs into a
    (C, y, x) float32 array, each pixel taken from the tile whose centre region owns it."""
    ny, nx = image.shape
    ys, xs = tile_starts(ny, tile, overlap), tile_starts(nx, tile, overlap)
    out = None
    with tqdm(total=len(ys) * len(xs), desc=desc, disable=not progress) as bar:
        for iy, y0 in enumerate(ys):
            ylo, yhi = _inner(y0, ny, tile, ys, iy)
            for ix, x0 in enumerate(xs):
                xlo, xhi = _inner(x0, nx, tile, xs, ix)
                res = np.asarray(fn(image[y0:y0 + tile, x0:x0 + tile]))
                if out is None:
                    out = np.zeros((res.shape[0], ny, nx), dtype=np.float32)
                out[:, ylo:yhi, xlo:xhi] = res[:, ylo - y0:yhi - y0, xlo - x0:xhi - x0]
                bar.update(1)
    return out
