"""Fingerprints: short hashes that tell two sets of model weights, or of training data, apart.

:func:`weights_fingerprint` hashes a model's parameters and buffers, so it is the same for the
same weights wherever they live and changes with any training step. The heatmap store records it
with each map, so maps of a retrained model are never taken for the old model's.
:func:`data_fingerprint` hashes the rows a model is trained on; the training configuration
records it, so a checkpoint trained on other data is not reused (e.g. after a phantom of another
size, whose training labels differ).
"""

from __future__ import annotations

import hashlib

import pandas as pd

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


def data_fingerprint(*datasets) -> str:
    """A short hash of the rows of ``datasets`` (:class:`~chexlib.data.dataset.CheXpertDataset`):
    each one's uncertainty policy, image paths and labels, in order.

    The images themselves are not read: a phantom's images follow from its rows' seeds, and
    CheXpert's files do not change. Datasets without a label table hash their length only.
    """
    digest = hashlib.sha256()
    for ds in datasets:
        labels = getattr(ds, "labels", None)
        if isinstance(labels, pd.DataFrame):
            rows = labels.iloc[list(getattr(ds, "indices", range(len(labels))))]
            digest.update(f"{getattr(ds, 'policy', '')};".encode())
            digest.update(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes())
        else:
            digest.update(f"{type(ds).__name__}:{len(ds)};".encode())
    return digest.hexdigest()[:16]
