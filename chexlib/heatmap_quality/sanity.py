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
from scipy.stats import rankdata
from torch import nn

#: DenseNet-121's blocks, top first: the order of the cascade.
CASCADE: tuple[str, ...] = (
    "classifier", "features.norm5", "features.denseblock4", "features.transition3",
    "features.denseblock3", "features.transition2", "features.denseblock2",
    "features.transition1", "features.denseblock1", "features.conv0",
)


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation of each pair of maps, [N, H, W] x [N, H, W] -> [N].

    Tied values share their average rank (``scipy.stats.spearmanr``'s convention): ranking ties
    in pixel order instead makes the flat zero regions of two rectified maps "agree" by their
    position alone (0.064 vs 0.011 on independent rectified maps). A constant map gets NaN.
    """
    x, y = (np.asarray(m, dtype=np.float64).reshape(len(m), -1) for m in (a, b))
    rx, ry = (rankdata(v, method="average", axis=1) for v in (x, y))
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denominator = np.linalg.norm(rx, axis=1) * np.linalg.norm(ry, axis=1)
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    rho = (rx * ry).sum(axis=1) / np.maximum(denominator, 1e-300)
    return np.where(constant, np.nan, rho)


def cosine_similarity(a, b) -> float:
    """Cosine of the angle between two maps (flattened); NaN when either is all zero (a blank
    map has no direction, so no similarity to report)."""
    x, y = (np.asarray(m, dtype=np.float64).ravel() for m in (a, b))
    norms = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / norms) if norms > 0 else float("nan")


def class_map_correlation(maps) -> np.ndarray:
    """Mean Spearman correlation over all pairs of one image's class maps, [N, K, H, W] -> [N].

    1: the maps do not change with the class; near 0: each class has its own map. Pairs with a
    constant map (NaN) are left out; NaN when no pair is left.
    """
    maps = np.asarray(maps, dtype=np.float64)
    count, classes = maps.shape[:2]
    first, second = np.triu_indices(classes, k=1)
    rho = np.stack([spearman(maps[:, i], maps[:, j]) for i, j in zip(first, second)], axis=1)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(rho)
        return np.where(finite.any(axis=1),
                        np.where(finite, rho, 0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1),
                        np.nan)


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
    methods : dict name -> callable (model, images, targets) -> maps [N, 1, H, W]
        e.g. ``lambda m, x, c: chexlib.explain.explain(m, x, "gradcam", c)``; ``targets`` is the
        per-image class table [N, 1] (:func:`chexlib.explain.inputs.class_targets`), so that
        image ``i`` is explained for ``classes[i]`` only.
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
    # Per-image targets [N, 1]: each image is explained for its own class only.
    targets = torch.tensor([int(c) for c in classes], dtype=torch.long)[:, None]

    def maps_of(net, fn):
        m = fn(net, images, targets)[:, 0].detach().cpu().numpy()
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
