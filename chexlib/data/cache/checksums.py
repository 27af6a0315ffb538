"""When a built cache counts as valid: its metadata matches the key and its rows their checksums.

The metadata is the commit marker of a build; :func:`_validate` accepts a cache only if the
metadata matches the key, the array's shape and dtype match the metadata, and the array's rows
match their BLAKE2b checksums (:func:`chunk_digests`), all of them or a spot check for a large
array (see the package docstring, :mod:`chexlib.data.cache`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from chexlib.data.cache.key import CACHE_VERSION

#: Rows per checksum (the metadata's ``digests``); opening a cache verifies them.
DIGEST_ROWS = 256
#: Arrays up to this size are verified completely on each open; larger ones by a spot check.
VERIFY_ALL_BYTES = 1 << 30
VERIFY_SAMPLE = 8


def _validate(
    npy: Path, meta_path: Path, key: str, n: int, size: int
) -> tuple[dict[str, Any] | None, str]:
    """Metadata of a complete, matching cache, or (None, why it cannot be used)."""
    if not meta_path.is_file():
        return None, "no cache yet (or an unfinished build)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return None, f"metadata {meta_path} is unreadable ({err})"
    expected = {"key": key, "version": CACHE_VERSION, "n": n, "image_size": size}
    for name, value in expected.items():
        if not isinstance(meta, dict) or meta.get(name) != value:
            return None, f"metadata {name} does not match (expected {value!r})"
    try:
        arr = np.load(npy, mmap_mode="r")
    except (OSError, ValueError, EOFError) as err:
        return None, f"array {npy} is missing or corrupt ({err})"
    if arr.shape != (n, size, size) or arr.dtype != np.uint8:
        return (
            None,
            f"array shape {arr.shape} {arr.dtype} does not match ({n}, {size}, {size}) uint8",
        )
    damaged = _damaged_chunk(arr, meta.get("digests"))
    if damaged is not None:
        return None, f"array {npy}: {damaged}"
    return meta, "valid"


def chunk_digests(arr: np.ndarray) -> list[str]:
    """BLAKE2b-128 digests (hex) of the array's chunks of :data:`DIGEST_ROWS` rows, in order."""
    return [_chunk_digest(arr, chunk) for chunk in range(math.ceil(len(arr) / DIGEST_ROWS))]


def _chunk_digest(arr: np.ndarray, chunk: int) -> str:
    rows = arr[chunk * DIGEST_ROWS:(chunk + 1) * DIGEST_ROWS]
    return hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=16).hexdigest()


def _damaged_chunk(arr: np.ndarray, digests: Any) -> str | None:
    """Why the array fails its checksums (None if it passes).

    Every chunk is checked when the array is at most :data:`VERIFY_ALL_BYTES`; a larger one
    (CheXpert at 320 px: 22.9 GB) gets a spot check of :data:`VERIFY_SAMPLE` random chunks and
    the last one on each open, so that opening it stays fast.
    """
    n_chunks = math.ceil(len(arr) / DIGEST_ROWS)
    if not isinstance(digests, list) or len(digests) != n_chunks:
        return "its checksums are missing from the metadata"
    chunks = list(range(n_chunks))
    if arr.nbytes > VERIFY_ALL_BYTES:
        rng = np.random.default_rng()
        chunks = sorted({*rng.choice(n_chunks, size=min(VERIFY_SAMPLE, n_chunks), replace=False),
                         n_chunks - 1})
    for chunk in chunks:
        if _chunk_digest(arr, chunk) != digests[chunk]:
            start = chunk * DIGEST_ROWS
            return (f"rows {start}-{min(start + DIGEST_ROWS, len(arr)) - 1} do not match their "
                    "checksum (the file was changed or damaged after it was built)")
    return None
