"""The one place that knows which zarr-python is installed (2.18 or 3.x): open, read, write v2."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import zarr

from cellmap.errors import CellMapError

__all__ = [
    "ZARR_MAJOR", "ZarrNotFoundError", "is_remote", "join", "local_path", "open_group", "open_array",
    "read_attrs", "write_attrs", "array_meta", "create_group", "create_array", "child_names",
]

ZARR_MAJOR = int(zarr.__version__.split(".")[0])


class ZarrNotFoundError(CellMapError):
    """A zarr group or array that should exist does not."""


def is_remote(location: str) -> bool:
    """True for URLs such as ``s3://...`` or ``https://...``."""
    return "://" in str(location) and not str(location).startswith("file://")


def local_path(location: str) -> str:
    """The filesystem path of a local location (strips ``file://``)."""
    loc = str(location)
    return loc[len("file://"):] if loc.startswith("file://") else loc


def join(location: str, *parts: str) -> str:
    """Join a store location and sub-paths with ``/`` (works for local paths and URLs)."""
    out = str(location).rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def _remote_kwargs(location: str) -> Dict[str, Any]:
    if not is_remote(location):
        return {}
    try:
        import fsspec  # noqa: F401
    except ImportError as exc:
        raise CellMapError(
            f"{location}: reading a remote store needs fsspec (and s3fs for s3://). Install them "
            "(`pip install fsspec s3fs`) or download the data first with `csc fetch-data` and point "
            "datasplit.csv at the local copy."
        ) from exc
    if str(location).startswith("s3://"):
        try:
            import s3fs  # noqa: F401
        except ImportError as exc:
            raise CellMapError(
                f"{location}: reading s3:// needs s3fs (`pip install s3fs`), or download the data "
                "with `csc fetch-data` and use local paths."
            ) from exc
        return {"storage_options": {"anon": True}}
    return {}


def _check_local(location: str, marker: str, kind: str) -> None:
    if is_remote(location):
        return
    path = local_path(location)
    if not os.path.isdir(path):
        raise ZarrNotFoundError(f"{path}: no such zarr {kind} (folder missing). Check the path, or that the "
                                "data was downloaded (csc fetch-data) / built (python -m cellmap.sample DIR).")
    if not os.path.exists(os.path.join(path, marker)):
        raise ZarrNotFoundError(f"{path}: folder exists but has no {marker}, so it is not a zarr v2 {kind}.")


def _open(location: str, mode: str, kind: str):
    marker, opener = (".zgroup", zarr.open_group) if kind == "group" else (".zarray", zarr.open_array)
    if mode == "r":
        _check_local(location, marker, kind)
    kw = _remote_kwargs(location)
    if ZARR_MAJOR >= 3:
        kw["zarr_format"] = 2
    return opener(location, mode=mode, **kw)


def open_group(location: str, mode: str = "r"):
    """Open an existing zarr v2 group (local path or URL)."""
    return _open(location, mode, "group")


def open_array(location: str, mode: str = "r"):
    """Open an existing zarr v2 array (local path or URL)."""
    return _open(location, mode, "array")


def read_attrs(location: str) -> Dict[str, Any]:
    """The attributes (``.zattrs``) of a group or array as a plain dict ({} when absent).

    A local ``.zattrs`` is read as JSON directly; remote ones through zarr.
    """
    if not is_remote(location):
        path = os.path.join(local_path(location), ".zattrs")
        if not os.path.isdir(local_path(location)):
            raise ZarrNotFoundError(f"{local_path(location)}: no such zarr group or array (folder missing).")
        if not os.path.exists(path):
            return {}
        with open(path, "r", encoding="utf-8") as f:
            try:
                return json.load(f)
            except json.JSONDecodeError as exc:
                raise CellMapError(f"{path}: not valid JSON ({exc}); the file is corrupt, re-download it.") from exc
    try:
        node = open_group(location)
    except Exception:
        node = open_array(location)
    return dict(node.attrs)


def write_attrs(node, attrs: Dict[str, Any]) -> None:
    """Replace-merge ``attrs`` into a group's or array's attributes."""
    node.attrs.update(attrs)


def array_meta(location: str) -> Dict[str, Any]:
    """The v2 array metadata: shape, chunks, dtype, fill_value, dimension_separator.

    Local arrays read ``.zarray``; remote arrays go through zarr.
    """
    if not is_remote(location):
        _check_local(location, ".zarray", "array")
        with open(os.path.join(local_path(location), ".zarray"), "r", encoding="utf-8") as f:
            meta = json.load(f)
        return {
            "shape": tuple(int(s) for s in meta["shape"]),
            "chunks": tuple(int(c) for c in meta["chunks"]),
            "dtype": meta["dtype"],
            "fill_value": meta.get("fill_value"),
            "dimension_separator": meta.get("dimension_separator") or ".",
        }
    arr = open_array(location)
    return {"shape": tuple(arr.shape), "chunks": tuple(arr.chunks), "dtype": str(arr.dtype),
            "fill_value": arr.fill_value, "dimension_separator": "/"}


def child_names(location: str) -> Tuple[str, ...]:
    """Names of the sub-groups and arrays directly under a local group, sorted."""
    path = local_path(location)
    if is_remote(location):
        g = open_group(location)
        return tuple(sorted(k for k in g.keys()))
    if not os.path.isdir(path):
        return ()
    return tuple(sorted(n for n in os.listdir(path)
                        if os.path.isdir(os.path.join(path, n))
                        and (os.path.exists(os.path.join(path, n, ".zgroup"))
                             or os.path.exists(os.path.join(path, n, ".zarray")))))


def create_group(location: str, attrs: Optional[Dict[str, Any]] = None, overwrite: bool = False):
    """Create (or open for writing) a zarr v2 group at a local path, with attributes."""
    mode = "w" if overwrite else "a"
    if ZARR_MAJOR >= 3:
        g = zarr.open_group(location, mode=mode, zarr_format=2)
    else:
        g = zarr.open_group(location, mode=mode)
    if attrs:
        g.attrs.update(attrs)
    return g


def create_array(group, name: str, data, chunks, attrs: Optional[Dict[str, Any]] = None,
                 fill_value=0, zstd_level: int = 5):
    """Write ``data`` as a zarr v2 array ``name`` in ``group``: zstd-compressed,
    ``dimension_separator "/"``, every chunk written (also all-fill chunks)."""
    import numcodecs

    comp = numcodecs.Zstd(level=zstd_level)
    if ZARR_MAJOR >= 3:
        arr = group.create_array(name, shape=data.shape, chunks=tuple(chunks), dtype=data.dtype,
                                 compressors=comp, fill_value=fill_value, overwrite=True,
                                 chunk_key_encoding={"name": "v2", "separator": "/"},
                                 config={"write_empty_chunks": True})
    else:
        arr = group.create_dataset(name, shape=data.shape, chunks=tuple(chunks), dtype=data.dtype,
                                   compressor=comp, fill_value=fill_value, overwrite=True,
                                   dimension_separator="/", write_empty_chunks=True)
    arr[...] = data
    if attrs:
        arr.attrs.update(attrs)
    return arr
