"""Atomic file writes: a temporary file in the target folder, then ``os.replace``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import yaml

__all__ = ["write_text_atomic", "write_yaml_atomic", "write_bytes_atomic"]


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_yaml_atomic(path, obj, **kwargs) -> Path:
    """Atomic YAML (``.yaml``/``.yml``) or JSON (``.json``) write; kwargs go to ``yaml.safe_dump``."""
    if str(path).endswith(".json"):
        return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
    kwargs.setdefault("sort_keys", False)
    kwargs.setdefault("default_flow_style", None)
    return write_text_atomic(path, yaml.safe_dump(obj, **kwargs))
