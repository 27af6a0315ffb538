"""Faithfulness of heatmaps by region perturbation (Bach et al. 2015; Samek et al. 2017).

The image is cut into non-overlapping ``patch`` x ``patch`` regions, ranked by the heatmap's sum
inside them, and removed in that order; the logit of the explained class is recorded after each
step. A faithful map makes the logit fall fast when the most relevant regions go first (MoRF)
and slowly when the least relevant go first (LeRF); a seeded random order is the baseline.
:func:`aopc` summarises a curve as the area over it (larger: a faster drop).

Multi-label: each image is explained for its own class (one row per (image, class) pair), and
every (image, step) pair is evaluated in batched forward passes of the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chexlib.errors import ParameterError
from chexlib.heatmap_quality.localisation import as_map_batch
from chexlib.explain.inputs import check_images, class_indices, device_dtype, num_outputs

ORDERS = ("morf", "lerf", "random")
FILLS = ("blur", "noisy_linear", "mean", "zero")
NOISE_STD = 0.1  # of the "noisy_linear" fill, in normalised units
_FOUR_NEIGHBOURS = ((0.0, 1.0, 0.0), (1.0, 0.0, 1.0), (0.0, 1.0, 0.0))


# --------------------------------------------------------------------------------------------
# regions and their order
# --------------------------------------------------------------------------------------------


def region_labels(height: int, width: int, patch: int) -> tuple[torch.Tensor, int]:
    """Region index of every pixel, int64 [H, W], and the number of regions R.

    Regions are ``patch`` x ``patch`` tiles numbered in row-major order from the top-left;
    tiles at the right and bottom edges are cut short when H or W is not a multiple of ``patch``.
    """
    columns = math.ceil(width / patch)
    rows = torch.arange(height) // patch
    cols = torch.arange(width) // patch
    return rows[:, None] * columns + cols[None, :], math.ceil(height / patch) * columns


def region_scores(maps: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Sum of each map inside each region, float64 [N, R]."""
    flat = maps.reshape(len(maps), -1).to(torch.float64)
    scores = torch.zeros(len(maps), count, dtype=torch.float64, device=maps.device)
    return scores.index_add_(1, labels.reshape(-1).to(maps.device), flat)


def removal_rank(scores: torch.Tensor, order: str, seed: int) -> torch.Tensor:
    """Position of each region in the removal order, int64 [N, R] (0: removed first).

    ``"morf"``: largest sum first; ``"lerf"``: smallest first (ties: the lower region index
    first, both); ``"random"``: a random permutation per image from ``seed``.
    """
    if order == "morf":
        ranking = torch.argsort(-scores, dim=1, stable=True)
    elif order == "lerf":
        ranking = torch.argsort(scores, dim=1, stable=True)
    else:
        generator = torch.Generator().manual_seed(seed)
        ranking = torch.argsort(torch.rand(scores.shape, generator=generator), dim=1)
        ranking = ranking.to(scores.device)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(ranking)
    return torch.empty_like(ranking).scatter_(1, ranking, positions)


def removed_counts(regions: int, steps: int) -> torch.Tensor:
    """Regions removed at steps 0..steps: ``round(s * R / steps)``, halves rounded up, [S + 1]."""
    s = torch.arange(steps + 1)
    return (2 * s * regions + steps) // (2 * steps)


# --------------------------------------------------------------------------------------------
# fills
# --------------------------------------------------------------------------------------------


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-channel Gaussian blur of [B, C, H, W] by a separable conv2d.

    The kernel has radius ``ceil(3 sigma)`` and sums to 1; borders are replicated.
    """
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _static_fill(images: torch.Tensor, fill: str, patch: int) -> torch.Tensor:
    """The replacement image of the fills that do not depend on the removed pixels."""
    if fill == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images)
    if fill == "zero":
        return torch.zeros_like(images)
    return gaussian_blur(images, patch / 2)  # "blur", and the source of "noisy_linear"


def neighbour_mean(source: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Mean of ``source`` over each pixel's kept 4-neighbours (ROAD-style linear imputation).

    Parameters
    ----------
    source : Tensor [B, C, H, W]
    removed : Tensor bool [B, H, W]

    Returns
    -------
    Tensor [B, C, H, W]
        For each pixel, the mean of ``source`` over its up / down / left / right neighbours that
        are inside the image and not removed; ``source`` itself where there is none (the inside of
        a removed region).
    """
    channels = source.shape[1]
    kernel = torch.tensor(_FOUR_NEIGHBOURS, dtype=source.dtype, device=source.device)
    keep = (~removed).to(source.dtype)[:, None]
    known = F.conv2d(keep, kernel.view(1, 1, 3, 3), padding=1)
    total = F.conv2d(source * keep, kernel.view(1, 1, 3, 3).expand(channels, 1, 3, 3),
                     padding=1, groups=channels)
    return torch.where(known > 0, total / known.clamp(min=1), source)


def _fill_for(fill: str, static: torch.Tensor, noise: torch.Tensor | None,
              removed: torch.Tensor) -> torch.Tensor:
    if fill != "noisy_linear":
        return static
    return neighbour_mean(static, removed) + noise


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParameterError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _check_positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name}={value!r}: expected a positive integer")
    return int(value)


def _check_maps(maps: Any, images: torch.Tensor) -> torch.Tensor:
    values = as_map_batch(maps)
    expected = (images.shape[0], *images.shape[-2:])
    if values.shape != expected:
        raise ParameterError(
            f"maps: shape {values.shape} does not match the images {tuple(images.shape)}; "
            f"expected {expected}"
        )
    return torch.from_numpy(values).to(images.device)


def _check_classes(classes: Any, count: int, model: nn.Module) -> list[int]:
    items = classes.tolist() if isinstance(classes, (torch.Tensor, np.ndarray)) else classes
    if isinstance(items, (str, int)) or not isinstance(items, Sequence) or len(items) != count:
        size = len(items) if isinstance(items, Sequence) and not isinstance(items, str) else 1
        raise ParameterError(
            f"classes: expected one class per image ({count}), got {size}: {classes!r:.80}")
    return class_indices(items, num_outputs(model))


# --------------------------------------------------------------------------------------------
# the curves
# --------------------------------------------------------------------------------------------


def region_perturbation(model: nn.Module, images: torch.Tensor, maps: Any,
                        classes: Sequence[int | str], order: str = "morf", patch: int = 8,
                        steps: int = 16, fill: str = "blur", batch_size: int = 32,
                        seed: int = 0) -> np.ndarray:
    """Region-perturbation curves: each image's own-class logit as its regions are removed.

    The image is cut into non-overlapping ``patch`` x ``patch`` regions (R in all), ranked by the
    sum of the map inside each. At step ``s = 0..steps`` the first ``round(s * R / steps)``
    regions of the ranking (halves rounded up) are replaced by the fill, and the logit of the
    image's class is recorded. All (image, step) pairs are evaluated in forward passes of
    ``batch_size`` images (``ceil(N * (steps + 1) / batch_size)`` passes in all) under
    ``torch.no_grad``; each chunk of perturbed images is built with tensor ops.

    Parameters
    ----------
    model : nn.Module
        Maps [B, 3, H, W] to logits [B, K]. Evaluated in eval mode; its mode is restored after.
    images : Tensor [N, 3, H, W]
        Normalised images.
    maps : array or Tensor [N, H, W]
        One heatmap per image (signed allowed), for that image's class.
    classes : sequence of N logit indices or observation names
        The class each image is explained for (multi-label: images may differ).
    order : {"morf", "lerf", "random"}
        Most relevant first, least relevant first (ties: the lower region index first, row-major
        from the top-left), or a random permutation per image drawn from ``seed`` (the baseline).
    patch : int
        Region side in pixels; edge regions are cut short when H or W is not a multiple.
    steps : int
        Number of perturbation steps after the unperturbed image.
    fill : {"blur", "noisy_linear", "mean", "zero"}
        What replaces a removed region:

        - ``"blur"``: the pixels of a Gaussian-blurred copy of the image (sigma = patch / 2,
          separable conv2d, radius ceil(3 sigma), replicated borders);
        - ``"noisy_linear"``: a simplified ROAD imputation (Rong et al. 2022). Each removed
          pixel takes the mean, over its 4-neighbours (up, down, left, right) that are inside
          the image and *not* removed at that step, of the blurred copy's values; a removed pixel
          with no such neighbour (the inside of a removed region) takes the blurred copy's own
          value. Gaussian noise of std 0.1 (normalised units), drawn once per image from
          ``seed`` and the same at every step, is added. ROAD proper solves a linear system so
          that every removed pixel is the weighted mean of its neighbours, removed or not;
          this is one local step of it, on the blurred image;
        - ``"mean"``: each channel's mean over the (unperturbed) image;
        - ``"zero"``: zeros in normalised space (the dataset mean colour, not black; the
          literature's black fill is ``-mean / std`` per channel).
    batch_size : int
        Images per forward pass.
    seed : int
        Seeds the random order and the noise of ``"noisy_linear"``.

    Returns
    -------
    ndarray float64 [N, steps + 1]
        Column 0 is the unperturbed logit; column ``s`` the logit after step ``s``.

    Raises
    ------
    ParameterError
        Malformed images, maps or classes, an unknown order or fill, a non-positive patch, steps
        or batch_size, or a class index beyond the model's outputs.
    """
    images = check_images(images)
    _check_choice(order, "order", ORDERS)
    _check_choice(fill, "fill", FILLS)
    patch, steps = _check_positive(patch, "patch"), _check_positive(steps, "steps")
    batch_size = _check_positive(batch_size, "batch_size")
    device, dtype = device_dtype(model)
    images = images.to(device, dtype)
    relevance = _check_maps(maps, images)
    targets = torch.tensor(_check_classes(classes, len(images), model), device=device)
    labels, count = region_labels(*images.shape[-2:], patch)
    rank = removal_rank(region_scores(relevance, labels, count), order, seed)
    plan = _Plan(images, rank, labels.to(device), removed_counts(count, steps).to(device),
                 targets, fill, _static_fill(images, fill, patch), _noise(images, fill, seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = torch.cat([plan.logits(model, start, batch_size)
                                for start in range(0, plan.total, batch_size)])
    finally:
        model.train(was_training)
    return logits.reshape(len(images), steps + 1).cpu().numpy().astype(np.float64)


def _noise(images: torch.Tensor, fill: str, seed: int) -> torch.Tensor | None:
    if fill != "noisy_linear":
        return None
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float64) * NOISE_STD
    return noise.to(images.device, images.dtype)


class _Plan:
    """Everything needed to build any chunk of the N * (S + 1) perturbed images."""

    def __init__(self, images, rank, labels, counts, targets, fill, static, noise):
        self.images, self.rank, self.labels, self.counts = images, rank, labels, counts
        self.targets, self.fill, self.static, self.noise = targets, fill, static, noise
        self.total = len(images) * len(counts)

    def perturbed(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Perturbed images of pairs ``start..stop - 1`` (row-major over (image, step)), and
        their image indices."""
        pair = torch.arange(start, stop, device=self.images.device)
        image, step = pair // len(self.counts), pair % len(self.counts)
        removed = self.rank[image][:, self.labels] < self.counts[step][:, None, None]
        noise = None if self.noise is None else self.noise[image]
        filled = _fill_for(self.fill, self.static[image], noise, removed)
        return torch.where(removed[:, None], filled, self.images[image]), image

    def logits(self, model: nn.Module, start: int, batch_size: int) -> torch.Tensor:
        batch, image = self.perturbed(start, min(start + batch_size, self.total))
        out = model(batch)
        if out.ndim != 2 or int(self.targets.max()) >= out.shape[1]:
            raise ParameterError(
                f"classes: index {int(self.targets.max())} is beyond the model's output of shape "
                f"{tuple(out.shape)}; expected logits [B, K] with K above every class index"
            )
        return out.gather(1, self.targets[image][:, None])[:, 0]


def aopc(curves: Any) -> np.ndarray:
    """Area over the perturbation curve of each row: mean of ``curve[0] - curve[s]``, s >= 1.

    Parameters
    ----------
    curves : array [N, steps + 1]
        From :func:`region_perturbation` (column 0: the unperturbed logit).

    Returns
    -------
    ndarray float64 [N]
        Larger means the logit fell faster (for MoRF: a more faithful map).

    Raises
    ------
    ParameterError
        Not 2-D, or fewer than 2 columns.
    """
    values = np.asarray(curves, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] < 2:
        raise ParameterError(
            f"curves: expected shape [N, steps + 1] with steps >= 1, got {values.shape}")
    return (values[:, :1] - values[:, 1:]).mean(axis=1)
