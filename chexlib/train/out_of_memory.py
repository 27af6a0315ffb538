"""A batch that does not fit in GPU memory: the error that says what to change and what is safe.

Training and prediction turn torch's ``OutOfMemoryError`` into chexlib's
:class:`~chexlib.errors.OutOfMemoryError`, whose message names the batch, suggests a smaller
``batch_size`` (or image size) and mixed precision, and, for training, says whether the resume
point on disk is intact.
"""

from __future__ import annotations

import re
from pathlib import Path

from chexlib.checkpoint import load_checkpoint
from chexlib.errors import CheckpointError, OutOfMemoryError


def _out_of_memory(what: str, exc: BaseException, images: int, batch_size: int, precision: str,
                   *, minimum: int = 1, how: str, resume: Path | None = None) -> OutOfMemoryError:
    """The error for a batch that did not fit in GPU memory: what to change, what is safe."""
    found = re.search(r"out of memory\. Tried to allocate [\d.]+ \w+", str(exc))
    detail = found.group(0) if found else (str(exc).splitlines() or ["out of memory"])[0][:200]
    if found and str(exc).startswith("CUDA "):
        detail = "CUDA " + detail
    half = max(minimum, batch_size // 2)
    if half < batch_size:
        advice = f"use a smaller batch_size, e.g. {how.format(half)}, and precision auto"
    else:
        advice = (f"batch_size {batch_size} is the smallest possible; use a smaller image_size "
                  "or a GPU with more memory, and precision auto")
    now = "it is already auto" if precision == "auto" else f"this run uses {precision}"
    message = (f"{what}: a batch of {images} images (batch_size={batch_size}) did not fit in "
               f"GPU memory ({detail}); {advice} (mixed precision on CUDA; {now})")
    if resume is not None:
        message += f". {_resume_note(resume)}"
    return OutOfMemoryError(message)


def _resume_note(last: Path) -> str:
    if not last.is_file():
        return f"Nothing was saved yet ({last.name} does not exist): a rerun starts afresh"
    try:
        ckpt = load_checkpoint(last, classes=None, image_size=None)
    except CheckpointError:
        return f"{last} was not changed"
    return (f"Nothing was written: the resume point {last} is intact (epoch {ckpt['epoch'] + 1}, "
            f"step {ckpt['step']}); a rerun with the same settings resumes from it, one with "
            f"another batch_size or precision trains afresh and keeps it as {last.name}.previous")
