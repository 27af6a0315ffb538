"""One writer per run folder: the lock that makes a second run into the same folder refuse.

A run folder is written by ``python -m chexlib run`` (the notebook series), by
``python -m chexlib.train`` and by notebooks opened by hand. Two of them writing the same
checkpoints, maps and tables at once would interleave their results, so each takes the advisory
lock ``<run>/.chexlib-run.lock`` (:func:`chexlib.files.file_lock`) without waiting: the second
stops with a message naming the folder and the process that holds it. The kernel releases the
lock when its holder ends, also when it is killed, so a crashed run never blocks the next one.

Children of the holder (the series' notebook kernels, the torchrun job notebook 02 launches, its
ranks) inherit the right to write through the environment variable :data:`HELD_ENV`, which the
holder sets to the folder's path while it holds the lock.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chexlib.errors import LockBusyError, RunFolderBusyError
from chexlib.files import file_lock
from chexlib.run import RunFolder

#: The run folder an ancestor process holds the lock of.
HELD_ENV = "CHEXLIB_RUN_LOCK_HELD"


def _held_by_ancestor(run_dir: Path) -> bool:
    return os.environ.get(HELD_ENV) == str(run_dir)


def _owner(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextmanager
def run_lock(run_dir: str | os.PathLike, what: str = "a chexlib run") -> Iterator[Path]:
    """Hold the run folder's lock for the ``with`` block (no-op when an ancestor holds it).

    Raises
    ------
    RunFolderBusyError
        Another process writes into the folder; the message says which.
    """
    run_dir = Path(run_dir).resolve()
    if _held_by_ancestor(run_dir):
        yield run_dir
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunFolder(run_dir).lock
    try:
        with file_lock(lock, blocking=False, what=f"run folder {run_dir}"):
            lock.write_text(f"{what}, pid {os.getpid()} on {socket.gethostname()}, started "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(sys.argv)}\n",
                            encoding="utf-8")
            before = os.environ.get(HELD_ENV)
            os.environ[HELD_ENV] = str(run_dir)
            try:
                yield run_dir
            finally:
                if before is None:
                    os.environ.pop(HELD_ENV, None)
                else:
                    os.environ[HELD_ENV] = before
    except LockBusyError:
        raise RunFolderBusyError(_busy_message(run_dir, lock)) from None


def check_free(run_dir: str | os.PathLike) -> None:
    """Raise :class:`RunFolderBusyError` if a run other than an ancestor writes into ``run_dir``.

    For a notebook opened by hand: it may read and write the folder unless a series or a training
    job is running there right now.
    """
    run_dir = Path(run_dir).resolve()
    lock = RunFolder(run_dir).lock
    if _held_by_ancestor(run_dir) or not lock.exists():
        return
    try:
        with file_lock(lock, blocking=False, what=f"run folder {run_dir}"):
            pass
    except LockBusyError:
        raise RunFolderBusyError(_busy_message(run_dir, lock)) from None


def _busy_message(run_dir: Path, lock: Path) -> str:
    return (f"run folder {run_dir} is in use by {_owner(lock)}. Wait for it to finish, or "
            "write into another folder (-p run_dir runs/<name> or --name <name>).")
