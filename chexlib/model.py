"""DenseNet-121 with an explainable head, and where its starting weights come from.

torchvision's ``DenseNet.forward`` ends in functional ``F.relu`` and ``F.adaptive_avg_pool2d``:
no LRP rule or Grad-CAM hook can attach to them, and its in-place ReLU overwrites the ``norm5``
output that a hook on ``features.norm5`` stored (see ``reference/explainability.md``).
:class:`DenseNet121` computes the same function with the head written as modules::

    features (torchvision's, ends in norm5) -> relu -> pool -> flatten -> classifier

Its state-dict keys are torchvision's (``features.*``, ``classifier.*``), so torchvision weights
load unchanged. :func:`densenet121` picks the starting weights: random, ImageNet (torchvision's
file, from the torch hub cache or a download), a chexlib checkpoint or a plain state-dict file.
Every file is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from chexlib.errors import CheckpointError, MissingFileError, ParameterError
from chexlib.observations import OBSERVATIONS

ARCH = "densenet121"
NUM_FEATURES = 1024  # channels of norm5, the input width of the classifier
WEIGHTS_CHOICES = ("none", "imagenet", "auto")
HEAD_KEYS = ("classifier.weight", "classifier.bias")

# torchvision's 2017 DenseNet files name dense-layer parameters ``norm.1``, ``conv.2`` ...; the
# modules are now ``norm1``, ``conv2``. Group 1: the module path up to the layer kind, group 2: the
# digit, group 3: the parameter or buffer name.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


class DenseNet121(nn.Module):
    """DenseNet-121 whose head is made of modules, the same function as torchvision's.

    Parameters
    ----------
    num_classes : int
        Number of outputs (14 for the CheXpert observations).

    Attributes
    ----------
    features : nn.Sequential
        torchvision's DenseNet-121 feature extractor, ``conv0`` ... ``norm5``;
        [N, 3, H, W] -> [N, 1024, H/32, W/32].
    relu : nn.ReLU
        The final rectification (not in place, so ``norm5``'s output survives for hooks).
    pool : nn.AdaptiveAvgPool2d
        Global average pool, [N, 1024, h, w] -> [N, 1024, 1, 1].
    flatten : nn.Flatten
        [N, 1024, 1, 1] -> [N, 1024].
    classifier : nn.Linear
        [N, 1024] -> [N, num_classes] logits.
    arch : str
        ``"densenet121"``, recorded in checkpoints.
    num_classes : int
    weights_source : str
        What the weights came from; set by :func:`densenet121`.
    """

    arch = ARCH

    def __init__(self, num_classes: int = len(OBSERVATIONS)) -> None:
        super().__init__()
        _check_num_classes(num_classes)
        # Build torchvision's model and keep its modules: identical layers, names and init.
        reference = torchvision.models.densenet121(weights=None, num_classes=num_classes)
        self.features = reference.features
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = reference.classifier
        self.num_classes = num_classes
        self.weights_source = "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch.

        Parameters
        ----------
        x : Tensor, shape [N, 3, H, W]
            Normalised images (H, W >= 29).

        Returns
        -------
        Tensor, shape [N, num_classes]
        """
        return self.classifier(self.flatten(self.pool(self.relu(self.features(x)))))


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


def remap_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision's old dense-layer keys (``...denselayer1.norm.1.weight`` ->
    ``...denselayer1.norm1.weight``); other keys are kept. Returns a new dict."""
    remapped = {}
    for key, value in state_dict.items():
        match = _LEGACY_KEY.match(key)
        new_key = f"{match.group(1)}{match.group(2)}.{match.group(3)}" if match else key
        remapped[new_key] = value
    return remapped


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ParameterError(f"num_classes={num_classes!r}: expected a positive integer")


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
    # Imported here: chexlib.checkpoint imports this module for model_from_checkpoint.
    from chexlib.checkpoint import check_checkpoint, is_checkpoint, read_torch_file

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


def load_model_state(model: nn.Module, state: dict, path: Path) -> None:
    """Load a full state dict (strict); a mismatch becomes a :class:`CheckpointError`."""
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model weights do not fit a DenseNet-121: {exc}") from exc


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from chexlib.checkpoint import read_torch_file

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


def describe_keys(**groups: list[str]) -> str:
    """``"2 unexpected keys (a, b); 1 missing keys (c)"``: at most three names per group."""
    parts = []
    for name, keys in groups.items():
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            parts.append(f"{len(keys)} {name.replace('_', ' ')} keys ({shown})")
    return "; ".join(parts)
