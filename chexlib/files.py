"""Atomic file writing: a reader sees the old file or the new one, never a torn one.

Every file chexlib writes (CSVs, JSON, figures, checkpoints, caches' metadata) goes through a
temporary file in the same folder, ``fsync`` and ``os.replace``. A crash mid-write leaves at most
a stray ``.<name>.<pid>.<random>.tmp`` file, which no reader takes for the real one.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def temp_path(path: Path) -> Path:
    """A unique temporary name beside ``path`` (hidden, with the writer's pid)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; create parent folders.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file gets the usual permissions (umask).
    ``durable=False`` skips the ``fsync`` (for many small files whose set is committed by a
    final marker file written durably, like the phantom's images and ``phantom.json``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, doc: Any, indent: int | None = None) -> Path:
    """Write a JSON document to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(doc, indent=indent))
