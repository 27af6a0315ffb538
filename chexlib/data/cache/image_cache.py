"""The image cache object: open a valid cache or build it, under the cache's lock.

:meth:`ImageCache.open_or_build` reuses a valid cache (without a lock when there is nothing to
write), otherwise takes the build lock, re-validates, and builds, resumes or repairs the cache;
an :class:`ImageCache` then serves the images of its rows from a read-only memory map, raising
the recorded error for an image that failed to decode (see the package docstring,
:mod:`chexlib.data.cache`).
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexlib.data.cache.checksums import DIGEST_ROWS, _chunk_digest, _validate, chunk_digests
from chexlib.data.cache.journal import _build
from chexlib.data.cache.key import CACHE_VERSION, _CacheFiles, cache_key
from chexlib.data.images import RESIZE_METHOD, check_image_size, load_grayscale, resolve_image_path
from chexlib.errors import ImageFileError, MissingFileError, ParameterError
from chexlib.files import atomic_write_json, file_lock

_log = logging.getLogger(__package__)  # "chexlib.data.cache": one logger for the whole cache
_ERRORS = {"MissingFileError": MissingFileError, "ImageFileError": ImageFileError}


class ImageCache:
    """A built, validated image cache; open one with :meth:`open_or_build`.

    Attributes
    ----------
    key : str
        The cache key (:func:`cache_key`).
    path : Path
        The ``.npy`` file.
    rebuilt : bool
        True if this call built the cache, False if it reused a valid one.
    reason : str
        Why it was built ("no cache yet", "array shape ... does not match", ...) or "reused".
    failed : dict[int, dict]
        Row -> ``{"path", "error", "message"}`` for images that could not be decoded.
    """

    def __init__(self, path: Path, meta: dict[str, Any], rebuilt: bool, reason: str) -> None:
        self.path = path
        self.meta = meta
        self.key: str = meta["key"]
        self.rebuilt = rebuilt
        self.reason = reason
        self.failed = {int(k): v for k, v in meta.get("failed", {}).items()}
        self._array: np.ndarray | None = None

    # The memory map is reopened lazily in each process: pickling a np.memmap (as DataLoader
    # workers started with spawn do) would copy the whole array.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    @property
    def array(self) -> np.ndarray:
        """The images, read-only memory map, uint8 [N, S, S]."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return int(self.meta["n"])

    def image(self, row: int) -> np.ndarray:
        """Image of one row, uint8 [S, S]; raises the recorded error for a failed image."""
        if row in self.failed:
            entry = self.failed[row]
            raise _ERRORS.get(entry["error"], ImageFileError)(entry["message"])
        return np.array(self.array[row])  # a copy in memory, not a view of the read-only map

    @classmethod
    def open_or_build(
        cls,
        data_root: str | os.PathLike,
        df: pd.DataFrame,
        image_size: int,
        cache_dir: str | os.PathLike,
        workers: int = 0,
        progress: bool = True,
        force: bool = False,
    ) -> ImageCache:
        """Open the cache of ``df`` at ``image_size``, building it first if needed.

        Parameters
        ----------
        data_root : str or path-like
            The folder that holds the CSV; images resolve with
            :func:`chexlib.data.images.resolve_image_path`.
        df : DataFrame
            Labels with a ``Path`` column; the cache holds one image per row, in row order.
        image_size : int
            Side S of the cached images.
        cache_dir : str or path-like
            Folder of the cache files (created if needed).
        workers : int
            0 decodes in this process; k > 0 uses k worker processes.
        progress : bool
            Show a tqdm progress bar while building.
        force : bool
            Rebuild even if a valid cache exists.

        Returns
        -------
        ImageCache
        """
        image_size = check_image_size(image_size)
        if len(df) == 0:
            raise ParameterError(
                "ImageCache: the label frame has no rows; expected at least one image"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ParameterError(f"workers is {workers!r}; expected an integer >= 0")
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(data_root, df, image_size)
        files = _CacheFiles.of(cache_dir, key)
        if not force:
            meta, _ = _validate(files.npy, files.meta, key, len(df), image_size)
            if meta is not None and (not meta.get("failed") or not os.access(cache_dir, os.W_OK)):
                # Nothing to write (no failed rows to retry, or no permission to write them): no
                # lock needed, so a read-only cache folder works.
                return cls(files.npy, meta, rebuilt=False, reason="reused")
        # Everything below may write the cache: one process at a time (module docstring).
        with file_lock(files.lock, what=f"image cache {files.npy}"):
            return cls._open_locked(files, key, data_root, df, image_size, workers, progress, force)

    @classmethod
    def _open_locked(
        cls,
        files: _CacheFiles,
        key: str,
        data_root: str | os.PathLike,
        df: pd.DataFrame,
        size: int,
        workers: int,
        progress: bool,
        force: bool,
    ) -> ImageCache:
        """:meth:`open_or_build` with the cache's lock held."""
        # Re-validate under the lock: the process we waited for may have built the cache.
        meta, reason = (
            (None, "force=True") if force else _validate(files.npy, files.meta, key, len(df), size)
        )
        _remove_stale_temps(files.npy.parent, key)
        paths = [resolve_image_path(data_root, p) for p in df["Path"].astype(str)]
        if meta is not None:
            cache = cls(files.npy, meta, rebuilt=False, reason="reused")
            _retry_failed(cache, files.meta, paths, size)
            return cache
        _log.info("building image cache %s: %s", files.npy, reason)
        # Drop the old commit marker first: until the new one is written nothing is valid.
        files.meta.unlink(missing_ok=True)
        failed = _build(files, key, paths, size, workers, progress, fresh=force)
        meta = _new_meta(key, df, data_root, size, failed)
        meta["digests"] = chunk_digests(np.load(files.npy, mmap_mode="r"))
        atomic_write_json(files.meta, meta, indent=1)  # last: from now on the cache is valid
        if failed:
            _log.warning("image cache %s: %d image(s) failed to decode", files.npy, len(failed))
        return cls(files.npy, meta, rebuilt=True, reason=reason)

def _new_meta(
    key: str, df: pd.DataFrame, data_root: str | os.PathLike, size: int, failed: dict[int, dict]
) -> dict[str, Any]:
    return {
        "key": key,
        "version": CACHE_VERSION,
        "csv": str(df.attrs.get("source", "")),
        "data_root": str(Path(data_root).resolve()),
        "image_size": size,
        "n": len(df),
        "dtype": "uint8",
        "resize": RESIZE_METHOD,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_ok": len(df) - len(failed),
        "failed": {str(k): v for k, v in sorted(failed.items())},
    }


def _retry_failed(cache: ImageCache, meta_path: Path, paths: list[Path], size: int) -> None:
    """Decode previously failed rows again; store the ones that now work."""
    repaired = {}
    for row in list(cache.failed):
        try:
            repaired[row] = load_grayscale(paths[row], size)
        except (MissingFileError, ImageFileError):
            continue
    if not repaired:
        return
    arr = np.load(cache.path, mmap_mode="r+")
    for row, img in repaired.items():
        arr[row] = img
        del cache.failed[row]
    arr.flush()
    for chunk in sorted({row // DIGEST_ROWS for row in repaired}):
        cache.meta["digests"][chunk] = _chunk_digest(arr, chunk)
    del arr
    cache.meta["failed"] = {str(k): v for k, v in sorted(cache.failed.items())}
    cache.meta["n_ok"] = len(cache) - len(cache.failed)
    atomic_write_json(meta_path, cache.meta, indent=1)


def _remove_stale_temps(cache_dir: Path, key: str) -> None:
    """Delete this key's temp files (``.<key>.*.tmp``) left by killed writers.

    Called under the cache's lock, and every writer of this key's files holds that lock, so
    any such file belongs to a process that is gone. (Builds of chexlib versions before the
    lock also named their temp arrays ``.<key>.<host>.<pid>.<random>.tmp``.)
    """
    for tmp in cache_dir.glob(f".{key}.*.tmp"):
        tmp.unlink(missing_ok=True)
