"""Decoding a build's chunks of rows into its partial array: in this process or a process pool.

:func:`_fill` decodes and resizes the images of each unfinished chunk straight into the partial
``.npy`` file and yields a chunk once its rows are flushed to disk, so the journal never vouches
for rows that are not there. With ``workers > 0`` the chunks go to a pool of spawned worker
processes, each writing into the shared file, so no pixels cross a pipe.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from chexlib.data.images import load_grayscale
from chexlib.errors import ImageFileError, MissingFileError


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
