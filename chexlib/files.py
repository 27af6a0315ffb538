"""Atomic file writing and advisory file locks.

Every file chexlib writes (CSVs, JSON, figures, checkpoints, caches' metadata) goes through a
temporary file in the same folder, ``fsync`` and ``os.replace``: a reader sees the old file or the
new one, never a torn one. A crash mid-write leaves at most a stray
``.<name>.<pid>.<random>.tmp`` file, which no reader takes for the real one.

:func:`file_lock` serialises processes that would otherwise write the same files at once (two
notebooks building the same image cache). It is an *advisory* lock on a lock file: it excludes
only processes that take the same lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chexlib.errors import LockBusyError, ParameterError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

_log = logging.getLogger(__name__)


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


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left behind.

    A temporary file (:func:`temp_path`) carries its writer's pid; it is stale when no process
    with that pid runs on this machine. (Only this machine's writers are considered: a folder
    shared with another host may hold a live writer's file under a pid unknown here, so callers
    use this where one machine writes, the run folder.) Returns the deleted files.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but is not ours (or we cannot tell): leave its file alone
    return True


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, doc: Any, indent: int | None = None) -> Path:
    """Write a JSON document to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(doc, indent=indent))


# --------------------------------------------------------------------------------------------
# advisory locks
# --------------------------------------------------------------------------------------------


@contextmanager
def file_lock(
    path: str | os.PathLike,
    *,
    blocking: bool = True,
    timeout: float | None = None,
    what: str = "a chexlib lock",
) -> Iterator[Path]:
    """Hold an exclusive advisory lock on the file ``path`` for the ``with`` block.

    POSIX: ``fcntl.flock`` on the file (created if needed, never deleted: deleting a lock file
    that another process has open would let a third process lock a new file of the same name).
    The kernel drops the lock when the holder's process ends in any way, SIGKILL included, so a
    crashed holder never leaves a stale lock. Windows (no ``fcntl``): ``msvcrt.locking`` of the
    file's first byte, also released by the OS when the process ends.

    The lock belongs to this open of the file, not to the process: it is not re-entrant, and a
    second ``file_lock`` on the same path in the same process waits like any other process.

    Parameters
    ----------
    path : str or path-like
        The lock file; its folder is created if needed.
    blocking : bool
        Wait while another process holds the lock (True), or raise at once (False).
    timeout : float, optional
        With ``blocking=True``: give up after this many seconds. None waits for ever.
    what : str
        What the lock protects, for log messages and errors ("the image cache 3fa2...").

    Yields
    ------
    Path
        ``path``.

    Raises
    ------
    LockBusyError
        If another process holds the lock and ``blocking`` is False or ``timeout`` ran out.
    ParameterError
        If ``timeout`` is negative or not a number, or is given with ``blocking=False``.
    """
    path = Path(path)
    _check_timeout(blocking, timeout)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, path, blocking, timeout, what)
        try:
            yield path
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _check_timeout(blocking: bool, timeout: float | None) -> None:
    if timeout is None:
        return
    if not blocking:
        raise ParameterError("file_lock: timeout is only meaningful with blocking=True")
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not timeout >= 0  # also rejects NaN
    ):
        raise ParameterError(f"file_lock: timeout is {timeout!r}; expected seconds >= 0 or None")


def _acquire(fd: int, path: Path, blocking: bool, timeout: float | None, what: str) -> None:
    if _try_lock(fd):
        return
    if not blocking:
        raise LockBusyError(
            f"{what}: the lock file {path} is held by another process (blocking=False, not "
            "waiting); try again when that process has finished"
        )
    # Visible at the default log level: otherwise a waiting notebook cell looks hung.
    _log.warning("%s: waiting for the lock file %s, held by another process", what, path)
    if timeout is None and fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C still interrupts it (PEP 475)
        return
    _poll(fd, path, math.inf if timeout is None else timeout, what)


def _poll(fd: int, path: Path, timeout: float, what: str) -> None:
    """Retry a non-blocking lock with growing pauses until it succeeds or ``timeout`` ends."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not _try_lock(fd):
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockBusyError(
                f"{what}: gave up after {timeout:g} s waiting for the lock file {path}, "
                "held by another process"
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, 0, os.SEEK_SET)  # msvcrt locks bytes from the current position
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
