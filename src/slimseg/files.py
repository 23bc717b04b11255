"""Atomic output files: every file slimseg writes appears under its final name only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary name beside ``path`` (same suffix, so writers that look at it still work); on
    success the file is flushed to disk and renamed to ``path``, on any error (or interrupt) removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any, default: Any = None) -> Path:
    return write_text(path, json.dumps(obj, indent=1, default=default) + "\n")


def check_can_write(path: str | Path) -> None:
    """Refuse, before long work starts, a file whose folder is not writable or cannot be made (a try
    with a temporary file: permissions, read-only disks, a file where a folder should be)."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder; choose another place")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"cannot write {path}: the folder {folder} is not writable ({err.strerror or err}); "
                         "choose another place") from None


def write_labels_tiff(path: str | Path, labels: Any, plane_axes: str = "") -> Path:
    """Instance labels as a zlib-compressed TIFF (uint16 where the ids fit, else uint32), axes recorded."""
    import numpy as np
    import tifffile

    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib", metadata={"axes": plane_axes + "YX"})
    return Path(path)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
