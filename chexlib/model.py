"""Where a DenseNet-121's starting weights come from: random, ImageNet, a checkpoint or a file.

:func:`densenet121` builds a :class:`~chexlib.densenet.DenseNet121` (the network with the
explainable head, re-exported here with its key helpers) and picks the starting weights: random,
ImageNet (torchvision's file, from the torch hub cache or a download), a chexlib checkpoint or a
plain state-dict file. Every file is read with ``torch.load(..., weights_only=True)``
(:func:`chexlib.torchfile.read_torch_file`); a checkpoint is checked as
:func:`chexlib.checkpoint_format.check_checkpoint` says.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from chexlib.checkpoint_format import check_checkpoint, is_checkpoint
from chexlib.densenet import (
    ARCH,
    HEAD_KEYS,
    NUM_FEATURES,
    DenseNet121,
    describe_keys,
    load_model_state,
    remap_legacy_keys,
)
from chexlib.errors import CheckpointError, MissingFileError, ParameterError
from chexlib.observations import OBSERVATIONS
from chexlib.torchfile import read_torch_file

__all__ = [
    "ARCH",
    "HEAD_KEYS",
    "NUM_FEATURES",
    "WEIGHTS_CHOICES",
    "DenseNet121",
    "densenet121",
    "describe_keys",
    "imagenet_cache_path",
    "imagenet_state_dict",
    "imagenet_url",
    "load_model_state",
    "remap_legacy_keys",
]

WEIGHTS_CHOICES = ("none", "imagenet", "auto")


def densenet121(
    num_classes: int = len(OBSERVATIONS), weights: str | os.PathLike | None = "none"
) -> DenseNet121:
    """Build a :class:`DenseNet121` and load its starting weights.

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    weights : {"none", "imagenet", "auto"} or path-like
        ``"none"`` (or None): torchvision's random initialisation, seeded by the caller's torch
        seed. ``"imagenet"``: torchvision's ImageNet backbone with a fresh classifier; raises
        :class:`MissingFileError` when the file is neither cached nor downloadable.
        ``"auto"``: ImageNet when available, otherwise a warning and random initialisation.
        A path: a chexlib checkpoint (arch and class list checked; the class list must be
        :data:`OBSERVATIONS` when ``num_classes`` is 14, otherwise only its length is checked)
        or a plain DenseNet-121 state dict (backbone loaded; classifier only if its shape fits).

    Returns
    -------
    DenseNet121
        In training mode; ``model.weights_source`` says what was loaded: ``"none"``,
        ``"imagenet"``, ``"scratch (ImageNet unavailable)"``, ``"checkpoint:<path>"`` or
        ``"state_dict:<path>"``.

    Raises
    ------
    MissingFileError
        ``"imagenet"`` unavailable, or the path does not exist.
    CheckpointError
        The file is refused (unsafe, corrupt, other arch or classes, not a DenseNet-121).
    """
    model = DenseNet121(num_classes)
    if weights is None or weights == "none":
        return model
    if weights == "imagenet":
        _load_backbone(model, imagenet_state_dict(), imagenet_cache_path(), load_head=False)
        model.weights_source = "imagenet"
        return model
    if weights == "auto":
        return _load_auto(model)
    if not isinstance(weights, (str, os.PathLike)):
        raise ParameterError(
            f"weights={weights!r}: expected one of {', '.join(WEIGHTS_CHOICES)} or the path of "
            "a checkpoint / state-dict file"
        )
    return _load_path(model, Path(weights))


def imagenet_url() -> str:
    """URL of torchvision's DenseNet-121 ImageNet weights (``IMAGENET1K_V1``)."""
    return torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.url


def imagenet_cache_path() -> Path:
    """Where torchvision looks for the ImageNet file: ``torch.hub.get_dir()/checkpoints/<name>``.

    The folder follows ``TORCH_HOME`` (default ``~/.cache/torch``), read at call time.
    """
    name = os.path.basename(urlparse(imagenet_url()).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's DenseNet-121 ImageNet state dict, keys already remapped.

    Uses the file in the torch hub cache; when absent, torchvision downloads it there.

    Raises
    ------
    MissingFileError
        The file is not cached and the download failed (e.g. no network); the message says which
        file to download and where to put it.
    """
    cache = imagenet_cache_path()
    if not cache.is_file():
        try:
            # torchvision's own route: downloads into the hub cache and checks the hash prefix.
            torchvision.models.DenseNet121_Weights.IMAGENET1K_V1.get_state_dict(
                progress=True, check_hash=True, weights_only=True, map_location="cpu"
            )
        except Exception as exc:  # network, HTTP, hash or disk errors all mean "not available"
            if not cache.is_file():
                raise MissingFileError(_imagenet_instructions(cache, exc)) from exc
            # Downloaded but unreadable to torchvision: the reader below says why.
    # Read the cached file ourselves, so the safe loader's error messages apply to it too.
    return _read_state_dict(cache)


def _imagenet_instructions(cache: Path, exc: BaseException) -> str:
    url = imagenet_url()
    return (
        f"ImageNet weights for DenseNet-121 are not available: {cache} does not exist and "
        f"downloading {url} failed ({type(exc).__name__}: {exc}). Download {url} on a machine "
        f"with network access and put it at {cache} (torchvision's cache: "
        "torch.hub.get_dir()/checkpoints, moved by TORCH_HOME), or pass the file's path as "
        "weights=<path>."
    )


def _load_auto(model: DenseNet121) -> DenseNet121:
    try:
        state = imagenet_state_dict()
    except MissingFileError as exc:
        warnings.warn(
            "chexlib: ImageNet weights unavailable, so DenseNet-121 TRAINS FROM SCRATCH (random "
            "initialisation; expect much lower accuracy for the same epochs). " + str(exc),
            UserWarning,
            stacklevel=3,
        )
        model.weights_source = "scratch (ImageNet unavailable)"
        return model
    _load_backbone(model, state, imagenet_cache_path(), load_head=False)
    model.weights_source = "imagenet"
    return model


def _load_path(model: DenseNet121, path: Path) -> DenseNet121:
    if not path.is_file():
        raise MissingFileError(
            f"weights={str(path)!r}: no such file; expected one of "
            f"{', '.join(WEIGHTS_CHOICES)} or the path of a checkpoint / state-dict file"
        )
    obj = read_torch_file(path)
    if is_checkpoint(obj):
        classes = OBSERVATIONS if model.num_classes == len(OBSERVATIONS) else None
        ckpt = check_checkpoint(obj, path, classes=classes, arch=ARCH)
        if len(ckpt["classes"]) != model.num_classes:
            raise CheckpointError(
                f"{path}: the checkpoint has {len(ckpt['classes'])} classes, expected "
                f"num_classes={model.num_classes}"
            )
        load_model_state(model, ckpt["model_state"], path)
        model.weights_source = f"checkpoint:{path}"
        return model
    _load_backbone(model, _as_state_dict(obj, path), path, load_head=True)
    model.weights_source = f"state_dict:{path}"
    return model


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return _as_state_dict(read_torch_file(path), path)


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise CheckpointError(
            f"{path}: not a chexlib checkpoint nor a state dict (a dict of parameter name -> "
            f"tensor); got {type(obj).__name__}"
        )
    return remap_legacy_keys(obj)


def _load_backbone(
    model: DenseNet121, state: dict[str, torch.Tensor], path: Path, load_head: bool
) -> None:
    """Load every ``features.*`` tensor of ``state``; the classifier only if asked and it fits.

    ``num_batches_tracked`` counters may be absent (torchvision's 2017 files have none).
    """
    own = model.state_dict()
    unexpected = sorted(k for k in state if k not in own)
    missing = sorted(
        k
        for k in own
        if k not in state and k not in HEAD_KEYS and not k.endswith("num_batches_tracked")
    )
    misshapen = sorted(
        k for k in state if k in own and k not in HEAD_KEYS and state[k].shape != own[k].shape
    )
    if unexpected or missing or misshapen:
        raise CheckpointError(
            f"{path}: not a DenseNet-121 state dict: "
            + describe_keys(unexpected=unexpected, missing=missing, wrong_shape=misshapen)
        )
    head_fits = all(k in state and state[k].shape == own[k].shape for k in HEAD_KEYS)
    if not (load_head and head_fits):
        # Keep the freshly initialised classifier (another class count, or ImageNet's 1000).
        state = {k: v for k, v in state.items() if k not in HEAD_KEYS}
    model.load_state_dict(state, strict=False)
