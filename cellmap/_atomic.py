"""Atomic text output: write a temporary file in the target folder, then rename it into place."""

from __future__ import annotations

import os
import tempfile

__all__ = ["write_text_atomic"]


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` via a temp file + ``os.replace``;
    creates the folder; returns ``path``. A failure leaves the old file (if any) untouched."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
