"""Synthetic 2D frames for the seg2d tests: disks on noise, written as TIFF datasets."""

from pathlib import Path

import numpy as np
import tifffile


def make_frame(seed: int, shape=(64, 64), n_cells: int = 6, radius=(4, 7)):
    """A synthetic frame: float32 image (y, x) of bright disks on noise, and int32 labels of the disks
    (non-overlapping, 1..n)."""
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.int32)
    k = 0
    for _ in range(200):
        r = int(rng.integers(radius[0], radius[1]))
        c = (int(rng.integers(r + 2, shape[0] - r - 2)), int(rng.integers(r + 2, shape[1] - r - 2)))
        rr, cc = disk(c, r + 1, shape=shape)
        if gt[rr, cc].any():
            continue
        rr, cc = disk(c, r, shape=shape)
        k += 1
        gt[rr, cc] = k
        if k >= n_cells:
            break
    image = (gt > 0).astype(np.float32) * (1.0 + 0.5 * rng.random()) + rng.normal(0, 0.2, shape).astype(np.float32)
    return image, gt


def write_dataset(root: Path, frames, mask_fn=None) -> Path:
    """Write frames [(image, gt)] as root/images/frameNNN.tif and root/masks/frameNNN.tif; `mask_fn(gt)` may
    transform the ground truth before it is written (to simulate a misaligned export)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i, (image, gt) in enumerate(frames):
        tifffile.imwrite(root / "images" / f"frame{i:03d}.tif", image)
        tifffile.imwrite(root / "masks" / f"frame{i:03d}.tif", (mask_fn(gt) if mask_fn else gt).astype(np.uint16))
    return root
