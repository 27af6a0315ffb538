"""Safe reading of torch files: ``torch.load(weights_only=True)`` with chexlib's errors.

Every checkpoint and weights file chexlib opens goes through :func:`read_torch_file`: only
tensors, numbers, strings, None, lists, tuples and dicts are unpickled, so opening a file from
someone else can never run code; a refused, missing, truncated or corrupt file becomes a
:class:`~chexlib.errors.MissingFileError` or :class:`~chexlib.errors.CheckpointError` that names
the file. What the file must hold (a checkpoint, a state dict) is checked elsewhere.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from chexlib.errors import CheckpointError, MissingFileError

UNSAFE_MESSAGE = (
    "refused: the file contains Python objects other than tensors; loading it could run code"
)


def read_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with chexlib's errors.

    Raises
    ------
    MissingFileError
        No such file.
    CheckpointError
        The file needs arbitrary unpickling (refused), or is truncated or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such checkpoint or weights file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(f"{path}: {UNSAFE_MESSAGE}{_unsafe_detail(exc)}") from exc
        raise CheckpointError(f"{path}: truncated or corrupt file ({exc})") from exc
    except OSError:
        raise  # permissions, disk errors: not the file's content
    except Exception as exc:  # zip, EOF and storage errors of a damaged file
        detail = str(exc).split(". ")[0]  # torch's zip errors go on with advice for its devs
        raise CheckpointError(
            f"{path}: truncated or corrupt file ({type(exc).__name__}: {detail})"
        ) from exc


def _unsafe_detail(exc: BaseException) -> str:
    # torch's message names the refused global (e.g. "GLOBAL builtins.open"); keep just that.
    found = re.search(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+", str(exc))
    return f" ({found.group(0)})" if found else ""
