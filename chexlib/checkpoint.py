"""Checkpoints: one file holds the model and everything needed to resume or reuse it.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)``:
only tensors, numbers, strings, None, lists, tuples and dicts, so opening a checkpoint from
someone else can never run code. Its fields:

=====================  ==========================================================================
``format``             ``"chexlib-checkpoint"``
``format_version``     :data:`FORMAT_VERSION`
``arch``               ``"densenet121"``
``classes``            list of output names, in logit order
``image_size``         side of the square input the model was trained on
``normalization``      ``{"mean": [3 floats], "std": [3 floats]}`` applied to the input
``uncertainty_policy`` ``"zeros"``, ``"ones"`` or ``"ignore"``
``model_state``        the model's state dict (CPU tensors)
``optimizer_state``    ``optimizer.state_dict()`` or None; likewise ``scheduler_state``,
                       ``scaler_state``
``epoch``, ``step``    progress counters
``history``            list of dicts (one per epoch, say)
``best``               dict describing the best epoch so far, or None
``config``             dict of the training parameters
``rng``                :func:`capture_rng_state` dict (from :mod:`chexlib.rng`, re-exported
                       here), or None
``chexlib_version``    ``torch_version``: the versions that wrote the file
=====================  ==========================================================================

Writes are atomic (:func:`chexlib.files.atomic_write_bytes`): a crash mid-save leaves the
previous checkpoint intact. Before writing, the bytes are read back with ``weights_only=True``, so
a checkpoint that could not be reopened is never written.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import chexlib
from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib.errors import CheckpointError, MissingFileError, ParameterError
from chexlib.files import atomic_write_bytes
from chexlib.model import (
    ARCH,
    HEAD_KEYS,
    DenseNet121,
    describe_keys,
    load_model_state,
    remap_legacy_keys,
)
from chexlib.observations import OBSERVATIONS, UNCERTAINTY_POLICIES
from chexlib.rng import capture_rng_state, restore_rng_state

FORMAT = "chexlib-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format", "format_version", "arch", "classes", "image_size", "normalization",
    "uncertainty_policy", "model_state", "optimizer_state", "scheduler_state", "scaler_state",
    "epoch", "step", "history", "best", "config", "rng", "chexlib_version", "torch_version",
)  # fmt: skip
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
]
UNSAFE_MESSAGE = (
    "refused: the file contains Python objects other than tensors; loading it could run code"
)


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


def weights_fingerprint(model: nn.Module) -> str:
    """A short hash of the model's parameters and buffers (names, shapes, dtypes and values).

    Equal for equal weights wherever they live (a copy, another device); different after any
    training step. The heatmap store records it to tell maps of a retrained model apart.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


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


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object claims to be a chexlib checkpoint (any format version)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_checkpoint(
    obj: Any,
    path: Path,
    *,
    classes: Sequence[str] | None = OBSERVATIONS,
    arch: str | None = ARCH,
    image_size: int | None = None,
) -> dict:
    """Check a loaded object is a usable checkpoint (see :func:`load_checkpoint`); return it."""
    if not is_checkpoint(obj):
        raise CheckpointError(
            f"{path}: not a chexlib checkpoint ({_what_it_is(obj)}); expected a chexlib "
            f"checkpoint (a dict with format={FORMAT!r}, written by "
            "chexlib.checkpoint.save_checkpoint or chexlib.train.fit)"
        )
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: {_version_problem(version)}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    if arch is not None and obj["arch"] != arch:
        raise CheckpointError(f"{path}: architecture {obj['arch']!r}, expected {arch!r}")
    if obj["arch"] == ARCH:
        _check_model_state(obj["model_state"], len(obj["classes"]), path)
    if classes is not None and list(obj["classes"]) != list(classes):
        raise CheckpointError(
            f"{path}: other classes than expected: {_class_difference(obj['classes'], classes)}"
        )
    if image_size is not None and obj["image_size"] != image_size:
        raise CheckpointError(
            f"{path}: trained on {obj['image_size']} px images, expected image_size={image_size}"
        )
    return obj


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


# ---------------------------------------------------------------- loading helpers


def _unsafe_detail(exc: BaseException) -> str:
    # torch's message names the refused global (e.g. "GLOBAL builtins.open"); keep just that.
    found = re.search(r"Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+", str(exc))
    return f" ({found.group(0)})" if found else ""


def _what_it_is(obj: Any) -> str:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if _is_densenet_state(obj):
            return "a plain state dict of DenseNet-121 weights; pass it to densenet121(weights=path)"
        keys = ", ".join(map(str, list(obj)[:3]))
        return f"a plain state dict of another network than DenseNet-121; its keys: {keys}, ..."
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:5]))
        return f"a dict without format={FORMAT!r}; its keys: {keys or 'none'}"
    return f"a {type(obj).__name__}"


@functools.lru_cache(maxsize=8)
def _densenet_shapes(num_classes: int) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of a DenseNet121 with ``num_classes`` outputs (no memory)."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = DenseNet121(num_classes=num_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _is_densenet_state(state: dict) -> bool:
    """Whether a plain state dict holds DenseNet-121 backbone weights (any classifier)."""
    own = _densenet_shapes(len(OBSERVATIONS))
    state = remap_legacy_keys(state)
    return all(
        k in state and tuple(state[k].shape) == shape
        for k, shape in own.items()
        if k not in HEAD_KEYS and not k.endswith("num_batches_tracked")
    )


def _check_model_state(state: Any, num_classes: int, path: Path) -> None:
    """A DenseNet-121 checkpoint's ``model_state`` must fit the model it will be loaded into."""
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(
            f"{path}: model_state is a {type(state).__name__}, expected a state dict "
            "(parameter name -> tensor)"
        )
    own = _densenet_shapes(num_classes)
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state)
    misshapen = sorted(k for k in state if k in own and tuple(state[k].shape) != own[k])
    if unexpected or missing or misshapen:
        raise CheckpointError(
            f"{path}: model_state does not fit a DenseNet-121 with {num_classes} outputs: "
            + describe_keys(unexpected=unexpected, missing=missing, wrong_shape=misshapen)
        )


def _version_problem(version: Any) -> str:
    if isinstance(version, int) and not isinstance(version, bool):
        if version > FORMAT_VERSION:
            return (
                f"format_version {version} is newer than this chexlib supports "
                f"({FORMAT_VERSION}); upgrade chexlib to read it"
            )
        return (
            f"format_version {version} is older than this chexlib supports ({FORMAT_VERSION}); "
            "re-create the checkpoint"
        )
    return f"format_version {version!r} is not an integer; expected {FORMAT_VERSION}"


def _class_difference(found: Sequence[str], expected: Sequence[str]) -> str:
    found, expected = list(found), list(expected)
    extra = [c for c in found if c not in expected]
    absent = [c for c in expected if c not in found]
    if extra or absent:
        return f"in the file but not expected: {extra}; expected but not in the file: {absent}"
    if len(found) != len(expected):
        return f"{len(found)} classes in the file (repeated names), expected {len(expected)}"
    i = next(i for i, (a, b) in enumerate(zip(found, expected)) if a != b)
    return (
        f"same classes in another order: position {i} is {found[i]!r} in the file, "
        f"{expected[i]!r} expected"
    )
