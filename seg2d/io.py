"""Reading and writing 2D frames: TIFF image/mask pairs, atomic TIFF and JSON writes."""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import tifffile

from seg2d.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One 2D frame: `image` float32 (y, x); `mask` int32 (y, x) instance labels (0 = background) or None."""

    name: str
    image: np.ndarray
    mask: Optional[np.ndarray]
    image_path: str
    mask_path: Optional[str] = None


def _tiffs(folder: Path) -> Dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in TIFF_SUFFIXES}


def as_2d(array: np.ndarray, path: str, what: str) -> np.ndarray:
    """Return `array` as (y, x), dropping singleton axes; raise DataError naming `path` for 3D or RGB data."""
    squeezed = np.squeeze(np.asarray(array))
    if squeezed.ndim == 2:
        return squeezed
    if squeezed.ndim == 3 and (squeezed.shape[-1] in (3, 4) or squeezed.shape[0] in (3, 4)):
        raise DataError(
            f"{path}: {what} has shape {array.shape}, which looks like RGB/RGBA; seg2d expects one "
            "grayscale 2D frame per file: save a single channel (e.g. the cytoplasm channel) as (y, x)."
        )
    raise DataError(
        f"{path}: {what} has shape {array.shape} ({squeezed.ndim}D after dropping singleton axes); "
        "seg2d expects a 2D (y, x) frame per file: split stacks/time-lapses into one TIFF per frame."
    )


def read_image(path) -> np.ndarray:
    """Read a 2D grayscale TIFF as float32 (y, x)."""
    path = str(path)
    try:
        data = tifffile.imread(path)
    except Exception as exc:  # tifffile raises several types for unreadable files
        raise DataError(f"{path}: cannot read as TIFF ({exc}); re-export it as a 2D TIFF.") from exc
    return as_2d(data, path, "image").astype(np.float32)


def labels_from_mask(mask: np.ndarray) -> np.ndarray:
    """Instance labels (int32, 0 = background) from a binary or labelled mask; binary masks are split into
    connected components (8-connectivity), so touching cells in a binary export become one object."""
    mask = np.asarray(mask)
    values = np.unique(mask)
    if values.size <= 2 and values[0] == 0:
        from skimage.measure import label

        return label(mask > 0, connectivity=2).astype(np.int32)
    if mask.dtype.kind == "f":
        if not np.all(np.mod(mask, 1) == 0):
            raise DataError("mask has non-integer float values; save instance labels as integers")
    return mask.astype(np.int64).astype(np.int32)


def read_mask(path, require_objects: bool = True) -> np.ndarray:
    """Read a 2D binary or labelled mask TIFF as int32 instance labels (y, x)."""
    path = str(path)
    try:
        data = tifffile.imread(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as TIFF ({exc}); re-export the mask as a 2D TIFF.") from exc
    data = as_2d(data, path, "mask")
    if np.any(data < 0):
        raise DataError(f"{path}: mask has negative values; use 0 for background and 1, 2, ... for cells.")
    try:
        labels = labels_from_mask(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    if require_objects and labels.max() == 0:
        raise DataError(
            f"{path}: mask is empty (all background); remove the frame from the dataset or export its "
            "ground truth again."
        )
    return labels


def list_images(images_dir) -> List[Path]:
    """TIFF files in `images_dir`, sorted by name."""
    folder = Path(images_dir)
    if folder.is_file():
        return [folder]
    files = list(_tiffs(folder).values())
    if not files:
        raise DataError(f"{folder}: no .tif/.tiff images found; pass a folder of 2D TIFF frames.")
    return files


def load_dataset(dataset_dir, frames: Optional[Sequence[str]] = None) -> List[Frame]:
    """Load `DIR/images/*.tif` with `DIR/masks/*.tif` of the same base names.

    Raises DataError naming the file for an image without mask (or the reverse), mismatched shapes,
    empty masks, or 3D/RGB data. `frames` optionally restricts to these base names.
    """
    root = Path(dataset_dir)
    images, masks = _tiffs(root / "images"), _tiffs(root / "masks")
    if not images:
        raise DataError(f"{root / 'images'}: no .tif/.tiff images found; expected DIR/images/<name>.tif.")
    if not masks:
        raise DataError(f"{root / 'masks'}: no .tif/.tiff masks found; expected DIR/masks/<name>.tif.")
    for stem in sorted(set(images) - set(masks)):
        raise DataError(
            f"{images[stem]}: image has no mask; expected {root / 'masks' / (stem + '.tif')} "
            "(same base name), or remove the image."
        )
    for stem in sorted(set(masks) - set(images)):
        raise DataError(
            f"{masks[stem]}: mask has no image; expected {root / 'images' / (stem + '.tif')} "
            "(same base name), or remove the mask."
        )
    names = sorted(images)
    if frames is not None:
        missing = sorted(set(frames) - set(names))
        if missing:
            raise DataError(f"{root}: frames {missing} not found; have {names}.")
        names = [n for n in names if n in set(frames)]
    out = []
    for stem in names:
        image = read_image(images[stem])
        mask = read_mask(masks[stem])
        if image.shape != mask.shape and image.shape != mask.shape[::-1]:
            raise DataError(
                f"{masks[stem]}: mask shape {mask.shape} differs from image {images[stem]} shape "
                f"{image.shape} (and is not its transpose, which calibration could rotate back); "
                "crop or pad the mask to the image size."
            )
        out.append(Frame(stem, image, mask, str(images[stem]), str(masks[stem])))
    return out


def write_atomic(path, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a temporary name beside ``path`` (ending in ``suffix``, for writers that
    pick a format from the name), then rename it to ``path``; on error the temporary file is removed.
    The result gets the usual permissions (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=str(path.parent))
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_tiff(path, array: np.ndarray) -> Path:
    """Write `array` to `path` atomically (temp file in the same folder, then rename)."""
    return write_atomic(path, lambda tmp: tifffile.imwrite(tmp, array))


def write_text(path, text: str) -> Path:
    """Write `text` to `path` atomically."""

    def _write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return write_atomic(path, _write)


def write_json(path, obj) -> Path:
    """Write `obj` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def mask_dtype(labels: np.ndarray) -> np.ndarray:
    """Labels as uint16 when they fit, else uint32 (what Cellpose writes)."""
    return labels.astype(np.uint16 if labels.max(initial=0) < 2 ** 16 else np.uint32)
