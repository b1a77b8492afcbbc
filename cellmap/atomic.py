"""Atomic file output: write a temporary file in the target folder, then rename it into place.

Readers (and a rerun after a kill) see either the previous file or the complete new one, never a
truncated file that looks complete. The final file gets the usual permissions (0666 minus the
umask), not the 0600 of :func:`tempfile.mkstemp`, so results stay readable in shared cluster folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["tmp_path_for", "remove_stale_temps", "atomic_path", "write_bytes_atomic", "write_text_atomic", "write_json_atomic", "write_yaml_atomic"]


def tmp_path_for(path) -> Path:
    """The temporary name a streaming writer uses for ``path`` before its rename: ``<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def remove_stale_temps(folder) -> int:
    """Delete the leftovers (``*.tmp-*``) of an interrupted run in ``folder``; returns how many."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob("*.tmp-*"):
            try:
                p.unlink()
                n += 1
            except FileNotFoundError:
                pass
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same folder, ending in ``suffix``, e.g. ``".png"`` for
    writers that pick a format from the name); on success rename it to ``path``, on error delete it.
    Creates the folder. Use for writers that take a file name (``fig.savefig``, ``nib.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.tmp-{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path, data: bytes, fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; ``fsync`` flushes it to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    """Atomic UTF-8 text write (newlines as given)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path, obj, indent: int = 2) -> Path:
    """Atomic JSON write, with a final newline."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def write_yaml_atomic(path, obj, **kwargs) -> Path:
    """Atomic YAML write (JSON when ``path`` ends in ``.json``); kwargs go to ``yaml.safe_dump``."""
    if str(path).endswith(".json"):
        return write_json_atomic(path, obj)
    import yaml

    kwargs.setdefault("sort_keys", False)
    kwargs.setdefault("default_flow_style", None)
    return write_text_atomic(path, yaml.safe_dump(obj, **kwargs))
