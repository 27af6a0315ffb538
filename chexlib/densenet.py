"""The DenseNet-121 network with an explainable head, and the names of its weights.

torchvision's ``DenseNet.forward`` ends in functional ``F.relu`` and ``F.adaptive_avg_pool2d``:
no LRP rule or Grad-CAM hook can attach to them, and its in-place ReLU overwrites the ``norm5``
output that a hook on ``features.norm5`` stored (see ``reference/explainability.md``).
:class:`DenseNet121` computes the same function with the head written as modules::

    features (torchvision's, ends in norm5) -> relu -> pool -> flatten -> classifier

Its state-dict keys are torchvision's (``features.*``, ``classifier.*``), so torchvision weights
load unchanged; :func:`remap_legacy_keys` renames those of torchvision's 2017 files. Where the
starting weights come from is :mod:`chexlib.model`'s concern, which re-exports these names.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision
from torch import nn

from chexlib.errors import CheckpointError, ParameterError
from chexlib.observations import OBSERVATIONS

ARCH = "densenet121"
NUM_FEATURES = 1024  # channels of norm5, the input width of the classifier
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
        What the weights came from; set by :func:`chexlib.model.densenet121`.
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


def load_model_state(model: nn.Module, state: dict, path: Path) -> None:
    """Load a full state dict (strict); a mismatch becomes a :class:`CheckpointError`."""
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: model weights do not fit a DenseNet-121: {exc}") from exc


def describe_keys(**groups: list[str]) -> str:
    """``"2 unexpected keys (a, b); 1 missing keys (c)"``: at most three names per group."""
    parts = []
    for name, keys in groups.items():
        if keys:
            shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
            parts.append(f"{len(keys)} {name.replace('_', ' ')} keys ({shown})")
    return "; ".join(parts)
