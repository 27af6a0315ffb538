"""The journaled build: decoding a cache chunk by chunk so that an interrupted build resumes.

:func:`_build` decodes the unfinished chunks of rows (on a fixed grid of :data:`CHUNK_ROWS`)
into ``.<key>.partial.npy``, appends one ``fsync``-ed journal line per finished chunk to
``.<key>.partial.jsonl``, and when every chunk is done renames the partial array to
``<key>.npy``. A build stopped in any way is continued from its journal; the journal's format and
the rules for torn or off-grid lines are in the package docstring (:mod:`chexlib.data.cache`).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import closing
from pathlib import Path
from typing import IO, Any

import numpy as np

from chexlib.data.cache.decode import _fill
from chexlib.data.cache.key import _CacheFiles
from chexlib.files import atomic_write_text
from chexlib.progress import progress_bar

#: Rows per chunk of a new build: the unit of work of a worker process and of the resume
#: journal. 256 CheXpert images take about a second to decode, so an interruption loses little
#: work, and 224k rows give ~900 journal lines.
CHUNK_ROWS = 256

_JOURNAL = "chexlib image cache"

_log = logging.getLogger(__package__)  # "chexlib.data.cache": one logger for the whole cache


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
