"""Helpers shared by the tests and the benchmarks (not a test module: test modules import it).

``TensorDataset`` and :func:`train_config`: a tiny learnable dataset and the training
configuration the training tests use. :func:`random_batchnorm`: non-trivial BatchNorms for a
freshly initialised DenseNet-121, so that explanation tests and benchmarks see the errors a
trained network would show. Tests import it as ``support`` (pytest puts ``tests/`` on
``sys.path``); benchmarks put ``tests/`` on ``sys.path`` first.
"""

from __future__ import annotations

import numpy as np
import torch

from chexlib.train import TrainConfig


class TensorDataset(torch.utils.data.Dataset):
    """Random images with learnable labels: a class is positive when its channel patch is bright."""

    def __init__(self, n=20, size=32, seed=0, classes=14):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.targets = (torch.rand(n, classes, generator=g) < 0.4).float().numpy()
        self.targets[0], self.targets[1] = 1.0, 0.0  # both labels present in every class
        self.masks = np.ones_like(self.targets)
        self.masks[2, :3] = 0.0  # some entries ignored, as under U-Ignore
        for i in range(n):
            self.images[i, 0, :4, :14] += torch.as_tensor(self.targets[i]).repeat_interleave(1)[:14]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], torch.as_tensor(self.targets[i]), torch.as_tensor(self.masks[i]), i


def train_config(**over):
    """The training tests' configuration (2 epochs, batches of 4, 32 px); ``over`` replaces fields."""
    base = dict(epochs=2, batch_size=4, lr=1e-3, seed=1, image_size=32, weights="none")
    return TrainConfig(**{**base, **over})


@torch.no_grad()
def random_batchnorm(model: torch.nn.Module, generator: torch.Generator, *, scale: bool = True,
                     negative_share: float = 0.0, shift: bool = True) -> torch.nn.Module:
    """Give every BatchNorm of ``model`` random running statistics and affine parameters.

    A freshly initialised network has trivial BatchNorms (mean 0, variance 1, scale 1, shift 0),
    which hide the errors explanation methods make on trained ones; tests and benchmarks use
    this instead. Per BatchNorm, drawn from ``generator`` in this order: running mean
    (N(0, 0.2^2)), running variance (U(0.5, 2)); with ``negative_share > 0`` a sign per channel
    (negative with that probability); with ``scale`` the scale (U(0.5, 1.5), signed); with
    ``shift`` the shift (N(0, 0.2^2)), else the shift that makes BatchNorm(0) = 0.

    Returns
    -------
    the model, modified in place
    """
    for bn in model.modules():
        if not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
        bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
        if negative_share > 0:
            sign = torch.where(torch.rand(n, generator=generator) < negative_share, -1.0, 1.0)
        else:
            sign = torch.ones(n)
        if scale:
            bn.weight.copy_(sign * (torch.rand(n, generator=generator) + 0.5))
        if shift:
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.2)
        else:
            bn.bias.copy_(bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps))
    return model
