"""Baseline maps that explain nothing: the chance level the comparison measures methods against.

:func:`random_maps` is the registry's ``random`` method (:data:`chexlib.methods.RANDOM`): seeded
standard-normal values, independent of the model and of the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chexlib.explain.inputs import class_indices, num_outputs


def random_maps(model: nn.Module, images: torch.Tensor,
                classes: Sequence[str | int] | str | int | None = None,
                batch_size: int | None = None, *, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal maps, float32 [B, K, H, W], drawn for the whole batch at once.

    Parameters
    ----------
    model : nn.Module
        Only its number of outputs counts (for ``classes=None``).
    images : Tensor [B, C, H, W]
        Only the shape counts: a stand-in without channels (``torch.empty(B, 0, H, W)``) spares
        loading the images.
    classes : names, indices or None (all outputs)
    batch_size : int, optional
        Ignored (nothing to batch); accepted like every method's.
    seed : int
        Seed of numpy's default generator; the values are those of
        ``default_rng(seed).standard_normal((B, K, H, W))``.

    Returns
    -------
    Tensor [B, K, H, W] on the images' device.
    """
    count = len(class_indices(classes, num_outputs(model)))
    shape = (len(images), count, *images.shape[-2:])
    maps = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return torch.from_numpy(maps).to(images.device)
