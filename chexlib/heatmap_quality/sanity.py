"""Sanity check: cascading model-parameter randomisation (Adebayo et al. 2018).

The parameters of the DenseNet-121 are replaced by random values block by block, from the top
(the classifier) down to the first convolution, cumulatively; after each block the maps are
computed again and compared with the trained model's maps by Spearman rank correlation. A
method whose maps stay the same while the model it explains is destroyed explains the image,
not the model.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

#: DenseNet-121's blocks, top first: the order of the cascade.
CASCADE: tuple[str, ...] = (
    "classifier", "features.norm5", "features.denseblock4", "features.transition3",
    "features.denseblock3", "features.transition2", "features.denseblock2",
    "features.transition1", "features.denseblock1", "features.conv0",
)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, [N, H, W] x [N, H, W] -> [N].

    Ranks by a stable sort (ties get distinct ranks, in pixel order); a constant map gets NaN.
    """
    x, y = (torch.as_tensor(np.asarray(m), dtype=torch.float64).flatten(1) for m in (a, b))
    rx, ry = (v.argsort(dim=1, stable=True).argsort(dim=1).double() for v in (x, y))
    rx, ry = rx - rx.mean(dim=1, keepdim=True), ry - ry.mean(dim=1, keepdim=True)
    denominator = rx.norm(dim=1) * ry.norm(dim=1)
    constant = (x.max(dim=1).values == x.min(dim=1).values) | \
        (y.max(dim=1).values == y.min(dim=1).values)
    rho = (rx * ry).sum(dim=1) / denominator.clamp(min=1e-300)
    return torch.where(constant, torch.nan, rho).numpy()


@torch.no_grad()
def randomise_block(model: nn.Module, block: str, generator: torch.Generator) -> None:
    """Replace every parameter of ``block`` by Gaussian noise of the parameter's own scale."""
    module = dict(model.named_modules())[block]
    for param in module.parameters():
        scale = param.std() if param.numel() > 1 else param.abs()
        noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
        param.copy_(noise.to(param.device) * scale.clamp(min=1e-3))


def cascading_randomisation(model: nn.Module, images: torch.Tensor, classes: Sequence[int],
                            methods: dict[str, Callable[[nn.Module, torch.Tensor, list[int]],
                                                        torch.Tensor]],
                            blocks: Sequence[str] = CASCADE, seed: int = 0,
                            absolute: bool = False) -> pd.DataFrame:
    """Spearman correlation of each method's maps with the trained model's, per randomised block.

    Parameters
    ----------
    model : nn.Module
        The trained model (untouched: a copy is randomised).
    images : Tensor [N, 3, H, W]
    classes : sequence of N int
        The class each image is explained for.
    methods : dict name -> callable (model, images, classes) -> maps [N, K, H, W]
        e.g. ``lambda m, x, c: chexlib.explain.explain(m, x, "gradcam", c)``; the map of image
        ``i`` is taken for ``classes[i]``.
    blocks : sequence of str
        Module names, randomised in this order, cumulatively.
    absolute : bool
        Compare ``|map|`` (as Adebayo et al. also report) instead of the signed maps.

    Returns
    -------
    DataFrame
        Columns ``method``, ``step`` (0 = trained, k = first k blocks randomised), ``block``
        (the last block randomised, "none" at step 0), ``image``, ``spearman``.
    """
    classes = [int(c) for c in classes]
    unique = sorted(set(classes))
    pick = torch.tensor([unique.index(c) for c in classes])

    def maps_of(net, fn):
        m = fn(net, images, unique)
        m = m[torch.arange(len(images)), pick].detach().cpu().numpy()
        return np.abs(m) if absolute else m

    original = {name: maps_of(model, fn) for name, fn in methods.items()}
    rows = [{"method": name, "step": 0, "block": "none", "image": i, "spearman": 1.0}
            for name in methods for i in range(len(images))]
    net = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    for step, block in enumerate(blocks, start=1):
        randomise_block(net, block, generator)
        for name, fn in methods.items():
            rho = spearman(original[name], maps_of(net, fn))
            rows += [{"method": name, "step": step, "block": block, "image": i,
                      "spearman": float(r)} for i, r in enumerate(rho)]
    return pd.DataFrame(rows)
