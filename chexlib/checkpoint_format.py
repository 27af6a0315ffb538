"""The checkpoint format: what a chexlib checkpoint holds, and the checks a loaded one must pass.

A checkpoint is a dict saved with ``torch.save`` and read with ``torch.load(weights_only=True)``
(:mod:`chexlib.torchfile`): only tensors, numbers, strings, None, lists, tuples and dicts, so
opening a checkpoint from someone else can never run code. :func:`check_checkpoint` accepts a
loaded object only if it is one, of this format version, complete, with a ``model_state`` that
fits its DenseNet-121, and of the architecture, classes and image size the caller expects.
Writing and reading the files is :mod:`chexlib.checkpoint`'s concern. The fields:

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
``rng``                :func:`~chexlib.rng.capture_rng_state` dict, or None
``chexlib_version``    ``torch_version``: the versions that wrote the file
=====================  ==========================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from chexlib.densenet import ARCH, HEAD_KEYS, DenseNet121, describe_keys, remap_legacy_keys
from chexlib.errors import CheckpointError
from chexlib.observations import OBSERVATIONS

FORMAT = "chexlib-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format", "format_version", "arch", "classes", "image_size", "normalization",
    "uncertainty_policy", "model_state", "optimizer_state", "scheduler_state", "scaler_state",
    "epoch", "step", "history", "best", "config", "rng", "chexlib_version", "torch_version",
)  # fmt: skip


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
    """Check a loaded object is a usable checkpoint; return it.

    See :func:`chexlib.checkpoint.load_checkpoint` for the parameters and the errors.
    """
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
