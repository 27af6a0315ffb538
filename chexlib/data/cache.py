"""Decode-and-resize-once image cache: a uint8 memory map of every image of a label frame.

Decoding and resizing a 320 x 390 JPEG costs a few milliseconds; over CheXpert's 223,414 images
that is minutes per epoch. The cache does it once and keeps the result as ``[N, S, S]`` uint8 in
a ``.npy`` file that every epoch, notebook and process maps into memory (the OS page cache shares
it between DataLoader workers).

Files in ``cache_dir``
----------------------
``<key>.npy``   the images, row ``i`` = row ``i`` of the label frame (``numpy.lib.format``)
``<key>.json``  metadata: key, version, csv, data root, image size, n, created, failed images

The key is a SHA-256 of the label CSV's bytes, the data root, the image size, the ordered list
of ``Path`` values, :data:`CACHE_VERSION` and the resize method. A different CSV, size or file
list therefore gives a new key and a new cache. Image *contents* are not hashed (reading 11 GB
to check a cache would defeat it): after replacing images under an unchanged CSV, pass
``force=True``.

Crash safety: the array is written under a temporary name and renamed; the metadata is renamed
into place last and is the commit marker. A cache counts as valid only if the metadata exists,
matches the key, and the array's shape and dtype match it. Anything else is rebuilt.

Images that are missing or corrupt do not stop the build: they are recorded in the metadata
(``failed``: row -> path, error class, message) and stored as zeros; reading such a row raises
the recorded error, naming the file. Failed rows are retried each time the cache is opened, so
a repaired file is picked up without a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexlib.data.images import RESIZE_METHOD, check_image_size, load_grayscale, resolve_image_path
from chexlib.errors import ImageFileError, MissingFileError, ParameterError
from chexlib.files import atomic_write_json
from chexlib.progress import progress_bar

#: Bump when the file layout or the meaning of the stored pixels changes.
CACHE_VERSION = 1

_log = logging.getLogger(__name__)
_ERRORS = {"MissingFileError": MissingFileError, "ImageFileError": ImageFileError}


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
        npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
        paths = [resolve_image_path(data_root, p) for p in df["Path"].astype(str)]
        meta, reason = (
            (None, "force=True") if force else _validate(npy, meta_path, key, len(df), image_size)
        )
        if meta is not None:
            cache = cls(npy, meta, rebuilt=False, reason="reused")
            _retry_failed(cache, meta_path, paths, image_size)
            return cache
        _log.info("building image cache %s: %s", npy, reason)
        _remove_stale_temps(cache_dir, key)
        # Drop the old commit marker first: until the new one is written nothing here is valid.
        meta_path.unlink(missing_ok=True)
        failed = _build(npy, paths, image_size, workers, progress)
        meta = {
            "key": key,
            "version": CACHE_VERSION,
            "csv": str(df.attrs.get("source", "")),
            "data_root": str(Path(data_root).resolve()),
            "image_size": image_size,
            "n": len(df),
            "dtype": "uint8",
            "resize": RESIZE_METHOD,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n_ok": len(df) - len(failed),
            "failed": {str(k): v for k, v in sorted(failed.items())},
        }
        atomic_write_json(meta_path, meta, indent=1)  # last step: from now on the cache counts as valid
        if failed:
            _log.warning("image cache %s: %d image(s) failed to decode", npy, len(failed))
        return cls(npy, meta, rebuilt=True, reason=reason)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


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
    return meta, "valid"


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
    del arr
    cache.meta["failed"] = {str(k): v for k, v in sorted(cache.failed.items())}
    cache.meta["n_ok"] = len(cache) - len(cache.failed)
    atomic_write_json(meta_path, cache.meta, indent=1)


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _temp_name(npy: Path) -> Path:
    # Host and pid in the name let a later build recognise temp files of dead builds.
    return npy.with_name(
        f".{npy.stem}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    )


def _build(
    npy: Path, paths: list[Path], size: int, workers: int, progress: bool
) -> dict[int, dict]:
    """Decode every image into a temporary .npy, then rename it to ``npy``. Returns failures."""
    tmp = _temp_name(npy)
    try:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size)
        )
        del arr  # workers (or _fill_rows) reopen it; the header is written already
        bar = progress_bar(total=len(paths), desc=f"caching images at {size}x{size}", disable=not progress)
        with bar:
            if workers == 0:
                failed = _fill_rows(str(tmp), 0, [str(p) for p in paths], size, bar.update)
            else:
                failed = _fill_parallel(tmp, paths, size, workers, bar.update)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, npy)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return failed


def _fill_rows(tmp: str, start: int, paths: list[str], size: int, step=None) -> dict[int, dict]:
    """Decode ``paths`` into rows ``start, start + 1, ...`` of the .npy ``tmp``.

    Runs in the main process or in a worker process (so it takes plain str arguments).
    """
    arr = np.load(tmp, mmap_mode="r+")
    failed = {}
    for offset, path in enumerate(paths):
        try:
            arr[start + offset] = load_grayscale(path, size)
        except (MissingFileError, ImageFileError) as err:
            failed[start + offset] = {
                "path": path,
                "error": type(err).__name__,
                "message": str(err),
            }
        if step is not None:
            step(1)
    arr.flush()
    return failed


def _fill_parallel(tmp: Path, paths: list[Path], size: int, workers: int, step) -> dict[int, dict]:
    # Each worker writes its chunk straight into the shared file, so no pixels cross a pipe.
    chunk = max(1, min(512, math.ceil(len(paths) / (workers * 8))))
    # spawn: safe after torch has started threads, and the same on every platform.
    context = multiprocessing.get_context("spawn")
    failed: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {
            pool.submit(_fill_rows, str(tmp), s, [str(p) for p in paths[s : s + chunk]], size): s
            for s in range(0, len(paths), chunk)
        }
        for future in as_completed(futures):
            failed.update(future.result())
            step(min(chunk, len(paths) - futures[future]))
    return failed


def _remove_stale_temps(cache_dir: Path, key: str) -> None:
    """Delete temp files of this key left by builds on this host whose process is gone."""
    host = socket.gethostname()
    for tmp in cache_dir.glob(f".{key}.*.tmp"):
        parts = tmp.name.split(".")  # "", key, host..., pid, uuid, "tmp"
        if len(parts) < 6 or ".".join(parts[2:-3]) != host or not parts[-3].isdigit():
            continue
        if not _process_alive(int(parts[-3])):
            tmp.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
