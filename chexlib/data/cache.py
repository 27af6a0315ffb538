"""Decode-and-resize-once image cache: a uint8 memory map of every image of a label frame.

Decoding and resizing a 320 x 390 JPEG costs a few milliseconds; over CheXpert's 223,414 images
that is minutes per epoch. The cache does it once and keeps the result as ``[N, S, S]`` uint8 in
a ``.npy`` file that every epoch, notebook and process maps into memory (the OS page cache shares
it between DataLoader workers).

Files in ``cache_dir``
----------------------
``<key>.npy``                the images, row ``i`` = row ``i`` of the label frame
                             (``numpy.lib.format``)
``<key>.json``               metadata: key, version, csv, data root, image size, n, created,
                             failed images
``.<key>.partial.npy``       the array of a build in progress (or interrupted)
``.<key>.partial.jsonl``     its journal: which chunks of rows are finished
``.<key>.lock``              the build lock (empty; stays on disk)

The key is a SHA-256 of the label CSV's bytes, the data root, the image size, the ordered list
of ``Path`` values, the size and modification time of every image, :data:`CACHE_VERSION` and the
resize method. A different CSV, size or file list therefore gives a new key and a new cache.
Image *contents* are not hashed (reading 11 GB to check a cache would defeat it): after
replacing images under an unchanged CSV in a way that keeps their size and time stamp, pass
``force=True``.

Crash safety: the metadata is written last and is the commit marker. A cache counts as valid
only if the metadata exists, matches the key, the array's shape and dtype match it, and the
array's rows match their checksums (``digests``: BLAKE2b-128 of every :data:`DIGEST_ROWS` rows,
computed when the build finishes). Each open verifies every checksum of an array up to
:data:`VERIFY_ALL_BYTES` (the phantom's caches: milliseconds) and a random sample of
:data:`VERIFY_SAMPLE` chunks plus the last one of a larger array (CheXpert's), so a cache
deleted, truncated or overwritten between notebooks is rebuilt, never used. Anything else is
rebuilt too.

Resume: rows are decoded in chunks of :data:`CHUNK_ROWS` on a fixed grid (row 0, C, 2C, ...;
independent of ``workers``) straight into ``.<key>.partial.npy``. After a chunk's rows are
flushed to that file, the main process appends one line to the journal and ``fsync``-s it::

    {"journal": "chexlib image cache", "key": ..., "n": N, "image_size": S, "chunk_rows": C}
    {"start": 0, "stop": 256, "failed": {"17": {"path": ..., "error": ..., "message": ...}}}
    ...

The first line is the header; the grid is the header's ``chunk_rows``, so a resume lines up even
if :data:`CHUNK_ROWS` or ``workers`` changed. A build stopped in any way (exception, Ctrl-C,
SIGKILL) is continued by the next :meth:`ImageCache.open_or_build` of the same key: it keeps
the partial array if its header matches, skips the chunks the journal lists and decodes the
rest. Journal lines that do not parse (a line torn by the kill) or do not fit the grid are
ignored, and the journal is rewritten without them before new lines are appended. A partial
array with a wrong header, or a journal with a wrong header, starts the build afresh, as does
``force=True``. When every chunk is done, the partial array is ``fsync``-ed and renamed to
``<key>.npy``, the journal is deleted and the metadata (failures merged from the journal) is
written.

Concurrency: everything that writes the cache happens while holding an advisory lock on
``.<key>.lock`` (:func:`chexlib.files.file_lock`). A second process that wants the same cache
waits for it, re-validates, and reuses the finished cache. The lock dies with its holder (even
with SIGKILL), so no stale lock ever blocks a later build. A valid cache without failed images
is opened without taking the lock, so a read-only copy of a cache folder still works.

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
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd

from chexlib.data.images import RESIZE_METHOD, check_image_size, load_grayscale, resolve_image_path
from chexlib.errors import ImageFileError, MissingFileError, ParameterError
from chexlib.files import atomic_write_json, atomic_write_text, file_lock
from chexlib.progress import progress_bar

#: Bump when the file layout or the meaning of the stored pixels changes.
CACHE_VERSION = 2  # 2: checksums of the rows in the metadata

#: Rows per chunk of a new build: the unit of work of a worker process and of the resume
#: journal. 256 CheXpert images take about a second to decode, so an interruption loses little
#: work, and 224k rows give ~900 journal lines.
CHUNK_ROWS = 256
#: Rows per checksum (the metadata's ``digests``); opening a cache verifies them.
DIGEST_ROWS = 256
#: Arrays up to this size are verified completely on each open; larger ones by a spot check.
VERIFY_ALL_BYTES = 1 << 30
VERIFY_SAMPLE = 8

_JOURNAL = "chexlib image cache"

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


# --------------------------------------------------------------------------------------------
# building (always under the cache's lock)
# --------------------------------------------------------------------------------------------


def _build(
    files: _CacheFiles,
    key: str,
    paths: list[Path],
    size: int,
    workers: int,
    progress: bool,
    fresh: bool,
) -> dict[int, dict]:
    """Decode the unfinished chunks into the partial array, then rename it to ``files.npy``.

    Resumes the build that ``files.journal`` records unless ``fresh``. Returns the failures
    (row -> path, error, message) of every chunk, including those of earlier attempts.
    """
    n = len(paths)
    if fresh:
        _discard_partial(files)
    state = _resume_state(files, key, n, size)
    if state is None:
        state = CHUNK_ROWS, {}
        _start_partial(files, key, n, size, CHUNK_ROWS)
    chunk_rows, done = state
    todo = [(s, e) for s, e in _grid(n, chunk_rows) if s not in done]
    already = n - sum(e - s for s, e in todo)
    desc = f"caching images at {size}x{size}"
    if already:
        desc += " (resuming)"
        _log.info(
            "resuming image cache %s: %s of %s images already cached",
            files.npy,
            f"{already:,}",
            f"{n:,}",
        )
    bar = progress_bar(total=n, initial=already, desc=desc, disable=not progress)
    with bar, open(files.journal, "a", encoding="utf-8") as journal:
        chunks = _fill(files.partial, paths, todo, size, workers, bar.update)
        with closing(chunks):  # on an error, stop the worker pool now, not at garbage collection
            for start, stop, failed in chunks:
                _append_line(journal, {"start": start, "stop": stop, "failed": _str_keys(failed)})
                done[start] = failed
    _fsync(files.partial)
    os.replace(files.partial, files.npy)
    # After the rename: a kill in between leaves a journal without its partial, which is ignored.
    files.journal.unlink(missing_ok=True)
    return {row: entry for failed in done.values() for row, entry in failed.items()}


def _grid(n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """The chunks ``(start, stop)`` of a build: fixed, so every attempt of a build agrees."""
    return [(s, min(s + chunk_rows, n)) for s in range(0, n, chunk_rows)]


def _start_partial(files: _CacheFiles, key: str, n: int, size: int, chunk_rows: int) -> None:
    """Create an empty partial array and a journal holding only its header."""
    _discard_partial(files)
    arr = np.lib.format.open_memmap(files.partial, mode="w+", dtype=np.uint8, shape=(n, size, size))
    del arr  # workers (or _fill_rows) reopen it; the header is written already
    _fsync(files.partial)  # the header is on disk before the journal vouches for any row
    header = {"journal": _JOURNAL, "key": key, "n": n, "image_size": size, "chunk_rows": chunk_rows}
    atomic_write_text(files.journal, json.dumps(header) + "\n")


def _discard_partial(files: _CacheFiles) -> None:
    files.journal.unlink(missing_ok=True)
    files.partial.unlink(missing_ok=True)


def _resume_state(
    files: _CacheFiles, key: str, n: int, size: int
) -> tuple[int, dict[int, dict[int, dict]]] | None:
    """``(chunk_rows, {start: failures})`` of an interrupted build to continue, or None."""
    if not files.partial.is_file() or not files.journal.is_file():
        return None
    if not _partial_matches(files.partial, n, size):
        _log.info("discarding unfinished image cache %s: wrong array header", files.partial)
        return None
    docs = _read_journal(files.journal)
    header = docs[0] if docs else None
    expected = {"journal": _JOURNAL, "key": key, "n": n, "image_size": size}
    if not isinstance(header, dict) or any(header.get(k) != v for k, v in expected.items()):
        _log.info("discarding unfinished image cache %s: wrong journal header", files.partial)
        return None
    chunk_rows = header.get("chunk_rows")
    if type(chunk_rows) is not int or chunk_rows < 1:
        return None
    done = dict(filter(None, (_chunk_entry(doc, n, chunk_rows) for doc in docs[1:])))
    # Rewrite without the ignored lines: a torn last line would swallow the next line appended.
    lines = [header] + [
        {"start": s, "stop": min(s + chunk_rows, n), "failed": _str_keys(f)}
        for s, f in sorted(done.items())
    ]
    atomic_write_text(files.journal, "".join(json.dumps(doc) + "\n" for doc in lines))
    return chunk_rows, done


def _partial_matches(partial: Path, n: int, size: int) -> bool:
    try:
        # Also fails if the file is shorter than its header says (a truncated copy).
        arr = np.load(partial, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return False
    return arr.shape == (n, size, size) and arr.dtype == np.uint8


def _read_journal(journal: Path) -> list[Any]:
    """One parsed document per line; None for a line that is not JSON (a torn write)."""
    docs = []
    for line in journal.read_bytes().splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:  # includes UnicodeDecodeError
            docs.append(None)
    return docs


def _chunk_entry(doc: Any, n: int, chunk_rows: int) -> tuple[int, dict[int, dict]] | None:
    """``(start, failures)`` of a well-formed journal line on the grid, else None."""
    if not isinstance(doc, dict):
        return None
    start, stop, failed = doc.get("start"), doc.get("stop"), doc.get("failed")
    if type(start) is not int or type(stop) is not int or not isinstance(failed, dict):
        return None
    if not 0 <= start < n or start % chunk_rows or stop != min(start + chunk_rows, n):
        return None
    rows = {}
    for row, entry in failed.items():
        if not (isinstance(row, str) and row.isdigit() and start <= int(row) < stop):
            return None
        if not isinstance(entry, dict) or not {"path", "error", "message"} <= entry.keys():
            return None
        rows[int(row)] = entry
    return start, rows


def _append_line(journal: IO[str], doc: dict[str, Any]) -> None:
    journal.write(json.dumps(doc) + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _str_keys(failed: dict[int, dict]) -> dict[str, dict]:
    return {str(k): v for k, v in sorted(failed.items())}


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fill(
    partial: Path, paths: list[Path], todo: list[tuple[int, int]], size: int, workers: int, step
) -> Iterator[tuple[int, int, dict[int, dict]]]:
    """Decode the chunks ``todo`` into ``partial``; yield ``(start, stop, failures)`` per chunk
    once its rows are flushed to the file (in completion order)."""
    if workers == 0 or not todo:
        for start, stop in todo:
            rows = [str(p) for p in paths[start:stop]]
            yield start, stop, _fill_rows(str(partial), start, rows, size, step)
    else:
        yield from _fill_parallel(partial, paths, todo, size, workers, step)


def _fill_rows(tmp: str, start: int, paths: list[str], size: int, step=None) -> dict[int, dict]:
    """Decode ``paths`` into rows ``start, start + 1, ...`` of the .npy ``tmp``; flush them.

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
    arr.flush()  # msync: the rows are in the file before the journal says so
    return failed


def _fill_parallel(
    partial: Path, paths: list[Path], todo: list[tuple[int, int]], size: int, workers: int, step
) -> Iterator[tuple[int, int, dict[int, dict]]]:
    # Each worker writes its chunk straight into the shared file, so no pixels cross a pipe.
    # spawn: safe after torch has started threads, and the same on every platform.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context)
    try:
        futures = {
            pool.submit(_fill_rows, str(partial), s, [str(p) for p in paths[s:e]], size): (s, e)
            for s, e in todo
        }
        for future in as_completed(futures):
            start, stop = futures[future]
            failed = future.result()
            step(stop - start)
            yield start, stop, failed
    finally:
        # On an error or Ctrl-C, wait only for the chunks already running, not the queued ones:
        # those are decoded when the build is resumed.
        pool.shutdown(wait=True, cancel_futures=True)


def _remove_stale_temps(cache_dir: Path, key: str) -> None:
    """Delete this key's temp files (``.<key>.*.tmp``) left by killed writers.

    Called under the cache's lock, and every writer of this key's files holds that lock, so
    any such file belongs to a process that is gone. (Builds of chexlib versions before the
    lock also named their temp arrays ``.<key>.<host>.<pid>.<random>.tmp``.)
    """
    for tmp in cache_dir.glob(f".{key}.*.tmp"):
        tmp.unlink(missing_ok=True)
