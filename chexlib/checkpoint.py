"""Checkpoints: one file holds the model and everything needed to resume or reuse it.

:func:`save_checkpoint` writes one, :func:`load_checkpoint` reads and checks one and
:func:`model_from_checkpoint` rebuilds its model. The fields and the checks are the format's
(:mod:`chexlib.checkpoint_format`); files are read with ``torch.load(weights_only=True)``
(:mod:`chexlib.torchfile`), so opening a checkpoint from someone else can never run code. The
names of those modules that callers use (:func:`check_checkpoint`, :func:`read_torch_file`,
:func:`weights_fingerprint`, the rng helpers of :mod:`chexlib.rng` ...) are re-exported here.

Writes are atomic (:func:`chexlib.files.atomic_write_bytes`): a crash mid-save leaves the
previous checkpoint intact. Before writing, the bytes are read back with ``weights_only=True``, so
a checkpoint that could not be reopened is never written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import chexlib
from chexlib.checkpoint_format import FORMAT, FORMAT_VERSION, check_checkpoint, is_checkpoint
from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib.densenet import ARCH, DenseNet121, load_model_state
from chexlib.errors import CheckpointError, ParameterError
from chexlib.files import atomic_write_bytes
from chexlib.fingerprint import weights_fingerprint
from chexlib.observations import OBSERVATIONS, UNCERTAINTY_POLICIES
from chexlib.rng import capture_rng_state, restore_rng_state
from chexlib.torchfile import read_torch_file

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "capture_rng_state",
    "check_checkpoint",
    "is_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "read_torch_file",
    "restore_rng_state",
    "save_checkpoint",
    "weights_fingerprint",
]


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    classes: Sequence[str],
    image_size: int,
    uncertainty_policy: str,
    normalization: Mapping[str, Sequence[float]] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int = 0,
    step: int = 0,
    history: list[dict] | None = None,
    best: dict | None = None,
    config: dict | None = None,
    rng: dict | None = None,
) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : str or path-like
        The file to (over)write; parent folders are created.
    model : DenseNet121
        The model (a ``torch.compile`` wrapper is unwrapped); its tensors are saved on the CPU.
    classes : sequence of str
        Output names, one per logit.
    image_size : int
        Input side S the model was trained on.
    uncertainty_policy : {"zeros", "ones", "ignore"}
    normalization : mapping or None
        ``{"mean": [3], "std": [3]}``; None records ImageNet's mean and std.
    optimizer, scheduler, scaler : objects with ``state_dict()`` or None
    epoch, step : int
    history : list of dict or None
        Stored as a list (empty for None). Numpy numbers and arrays become Python numbers and
        lists, paths become strings; other objects are refused.
    best : dict or None
    config : dict or None
        Stored as a dict (empty for None); same conversions as ``history``.
    rng : dict or None
        From :func:`capture_rng_state`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ParameterError
        A metadata argument has the wrong type or value.
    CheckpointError
        A field would not load with ``weights_only=True``; nothing is written then.
    """
    path = Path(path)
    model = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the real module
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": _model_arch(model),
        "classes": _check_classes_arg(classes, model),
        "image_size": _check_positive_int(image_size, "image_size"),
        "normalization": _check_normalization(normalization),
        "uncertainty_policy": _check_policy(uncertainty_policy),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": _state_of(optimizer),
        "scheduler_state": _state_of(scheduler),
        "scaler_state": _state_of(scaler),
        "epoch": _check_count(epoch, "epoch"),
        "step": _check_count(step, "step"),
        "history": _plain(list(history or []), "history"),
        "best": _plain(best, "best"),
        "config": _plain(dict(config or {}), "config"),
        "rng": _plain(rng, "rng"),
        "chexlib_version": str(chexlib.__version__),
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass: unpicklable
    }
    return atomic_write_bytes(path, _serialise(ckpt, path))


def load_checkpoint(
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = OBSERVATIONS,
    arch: str | None = ARCH,
    image_size: int | None = None,
    map_location: Any = "cpu",
) -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or path-like
    classes : sequence of str or None
        The class list the caller expects, in order; None skips the check.
    arch : str or None
        The architecture the caller expects; None skips the check.
    image_size : int or None
        The input size the caller expects; None skips the check.
    map_location
        Passed to ``torch.load``.

    Returns
    -------
    dict
        The checkpoint (fields in the module docstring).

    Raises
    ------
    MissingFileError
        No such file.
    CheckpointError
        Unsafe, truncated or corrupt file, not a chexlib checkpoint, unsupported format version,
        or another arch, class list or image size than expected.
    """
    path = Path(path)
    obj = read_torch_file(path, map_location=map_location)
    return check_checkpoint(obj, path, classes=classes, arch=arch, image_size=image_size)


def model_from_checkpoint(path: str | os.PathLike, **expect: Any) -> tuple[DenseNet121, dict]:
    """The model stored in a checkpoint, in eval mode, and the checkpoint.

    Parameters
    ----------
    path : str or path-like
    **expect
        ``classes``, ``arch``, ``image_size``, ``map_location`` as in :func:`load_checkpoint`.

    Returns
    -------
    model : DenseNet121
        Eval mode; on ``map_location`` when that names a device; ``weights_source`` is
        ``"checkpoint:<path>"``.
    checkpoint : dict
    """
    path = Path(path)
    ckpt = load_checkpoint(path, **expect)
    # The random initialisation is overwritten at once; keep the caller's random stream as it was.
    with torch.random.fork_rng(devices=[]):
        model = DenseNet121(num_classes=len(ckpt["classes"]))
    load_model_state(model, ckpt["model_state"], path)
    model.weights_source = f"checkpoint:{path}"
    location = expect.get("map_location", "cpu")
    if isinstance(location, (str, torch.device)):
        model.to(location)
    return model.eval(), ckpt


# ---------------------------------------------------------------- saving helpers


def _serialise(ckpt: dict, path: Path) -> bytes:
    """``torch.save`` to bytes, then prove the bytes load with ``weights_only=True``."""
    buffer = io.BytesIO()
    try:
        torch.save(ckpt, buffer)
        data = buffer.getvalue()
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        bad = [key for key, value in ckpt.items() if not _loads_safely(value)]
        raise CheckpointError(
            f"{path}: not saved: field(s) {', '.join(bad) or '?'} would not load with "
            f"torch.load(weights_only=True) ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    return data


def _loads_safely(value: Any) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure means "this field is the culprit"
        return False
    return True


def _plain(obj: Any, where: str) -> Any:
    """``obj`` made of what ``weights_only`` accepts; numpy values and paths are converted."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return {_plain(k, f"{where} key"): _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise CheckpointError(
        f"{where}: a {type(obj).__name__} cannot go into a checkpoint; expected numbers, "
        "strings, None, tensors, lists and dicts (torch.load(weights_only=True) refuses others)"
    )


def _state_of(obj: Any) -> dict | None:
    return None if obj is None else obj.state_dict()


def _model_arch(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    if not isinstance(arch, str):
        raise ParameterError(
            f"model: a {type(model).__name__} without an 'arch' attribute; expected a chexlib "
            "DenseNet121 (chexlib.model.densenet121)"
        )
    return arch


def _check_classes_arg(classes: Sequence[str], model: nn.Module) -> list[str]:
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ParameterError(f"classes={classes!r}: expected a sequence of class names")
    names = list(classes)
    outputs = getattr(model, "num_classes", len(names))
    if len(names) != outputs:
        raise ParameterError(
            f"classes: {len(names)} names for a model with {outputs} outputs; expected one per logit"
        )
    return names


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def _check_count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ParameterError(f"{name}={value!r}: expected an integer >= 0")
    return int(value)


def _check_policy(policy: Any) -> str:
    if policy not in UNCERTAINTY_POLICIES:
        raise ParameterError(
            f"uncertainty_policy={policy!r}: expected one of {', '.join(UNCERTAINTY_POLICIES)}"
        )
    return str(policy)


def _check_normalization(normalization: Mapping[str, Sequence[float]] | None) -> dict:
    if normalization is None:
        return {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    try:
        mean = [float(v) for v in normalization["mean"]]
        std = [float(v) for v in normalization["std"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ParameterError(
            f"normalization={normalization!r}: expected {{'mean': [3 floats], 'std': [3 floats]}}"
        ) from exc
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ParameterError(
            f"normalization={normalization!r}: expected 3 means and 3 positive stds"
        )
    return {"mean": mean, "std": std}
