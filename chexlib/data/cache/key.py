"""The cache key: which label file, data root, image size and image files a cache holds.

:func:`cache_key` hashes everything a cache's pixels depend on, except the images' contents (see
the package docstring, :mod:`chexlib.data.cache`), so a different CSV, size or file list gives a
new key and a new cache; :class:`_CacheFiles` names the files of one key in the cache folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from chexlib.data.images import RESIZE_METHOD, check_image_size, resolve_image_path

#: Bump when the file layout or the meaning of the stored pixels changes.
CACHE_VERSION = 2  # 2: checksums of the rows in the metadata


def cache_key(data_root: str | os.PathLike, df: pd.DataFrame, image_size: int) -> str:
    """SHA-256 (hex) identifying the cached images of ``df`` at ``image_size``.

    Parameters
    ----------
    data_root : str or path-like
        The folder that holds the CSV.
    df : DataFrame
        Labels with a ``Path`` column. If ``df.attrs["source"]`` names a file (as
        :func:`chexlib.data.read_labels` sets it), that file's bytes are hashed; otherwise the
        frame's CSV text is.
    image_size : int
        Side S of the cached images.

    Returns
    -------
    str
        64 hex digits.
    """
    h = hashlib.sha256()

    def field(name: str, data: bytes) -> None:
        # Length-prefixed fields, so no two different inputs can produce the same byte stream.
        h.update(f"{name}:{len(data)}:".encode())
        h.update(data)

    field("version", str(CACHE_VERSION).encode())
    field("resize", RESIZE_METHOD.encode())
    field("size", str(check_image_size(image_size)).encode())
    field("root", str(Path(data_root).resolve()).encode())
    field("csv", _csv_bytes(df))
    field("paths", "\n".join(df["Path"].astype(str)).encode())
    field("files", _file_signatures(data_root, df))
    return h.hexdigest()


def _file_signatures(data_root: str | os.PathLike, df: pd.DataFrame) -> bytes:
    """Size and modification time of every image: a regenerated or replaced image (same CSV,
    same paths) changes the key. One ``stat`` per file, ~1 s for CheXpert's 224k images."""
    out = []
    for value in df["Path"].astype(str):
        try:
            st = os.stat(resolve_image_path(data_root, value))
            out.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            out.append("missing")
    return "\n".join(out).encode()


def _csv_bytes(df: pd.DataFrame) -> bytes:
    source = df.attrs.get("source")
    if source and Path(source).is_file():
        return Path(source).read_bytes()
    return df.to_csv(index=False).encode()


class _CacheFiles(NamedTuple):
    """The files of one cache key (see the module docstring)."""

    npy: Path
    meta: Path
    partial: Path
    journal: Path
    lock: Path

    @classmethod
    def of(cls, cache_dir: Path, key: str) -> _CacheFiles:
        return cls(
            npy=cache_dir / f"{key}.npy",
            meta=cache_dir / f"{key}.json",
            partial=cache_dir / f".{key}.partial.npy",
            journal=cache_dir / f".{key}.partial.jsonl",
            lock=cache_dir / f".{key}.lock",
        )
