"""Weights fingerprints: a short hash that tells two sets of model weights apart.

:func:`weights_fingerprint` hashes a model's parameters and buffers, so it is the same for the
same weights wherever they live and changes with any training step. The heatmap store records it
with each map, so maps of a retrained model are never taken for the old model's.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


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
