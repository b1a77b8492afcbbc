"""The 8 flips/rotations of a 2D array (dihedral group D4) by name, and integer shifts, applied to ground truth."""

from typing import List, Sequence, Tuple

import numpy as np

from seg2d.errors import ConfigError

__all__ = ["TRANSFORMS", "apply_transform", "apply_calibration", "transforms_for_shapes"]

#: name -> (k rotations by np.rot90, flip applied after the rotation: None, "ud" or "lr")
TRANSFORMS = {
    "identity": (0, None),
    "rot90": (1, None),
    "rot180": (2, None),
    "rot270": (3, None),
    "flipud": (0, "ud"),
    "fliplr": (0, "lr"),
    "rot90_flipud": (1, "ud"),
    "rot90_fliplr": (1, "lr"),
}


def apply_transform(array: np.ndarray, name: str) -> np.ndarray:
    """`np.rot90` k times, then the flip, of a (y, x) array, for a transform `name` in TRANSFORMS."""
    if name not in TRANSFORMS:
        raise ConfigError(f"unknown calibration transform {name!r}; use one of {', '.join(TRANSFORMS)}")
    k, flip = TRANSFORMS[name]
    out = np.rot90(array, k)
    if flip == "ud":
        out = np.flipud(out)
    elif flip == "lr":
        out = np.fliplr(out)
    return np.ascontiguousarray(out)


def apply_calibration(array: np.ndarray, name: str, shift: Sequence[int]) -> np.ndarray:
    """Transform `name` then the integer shift (dy, dx) with `np.roll` semantics: GT -> aligned with image."""
    out = apply_transform(array, name)
    dy, dx = (int(s) for s in shift)
    if dy or dx:
        out = np.roll(out, (dy, dx), axis=(0, 1))
    return out


def transforms_for_shapes(gt_shape: Tuple[int, int], image_shape: Tuple[int, int]) -> List[str]:
    """Transform names whose output shape equals `image_shape` (90-degree ones only where shapes allow)."""
    return [n for n, (k, _) in TRANSFORMS.items()
            if (tuple(gt_shape) if k % 2 == 0 else tuple(gt_shape[::-1])) == tuple(image_shape)]
