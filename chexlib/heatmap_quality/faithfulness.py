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
from scipy import sparse
from scipy.sparse.linalg import splu
from torch import nn

from chexlib.device import inference_format
from chexlib.errors import ParameterError
from chexlib.heatmap_quality.localisation import as_map_batch
from chexlib.explain.inputs import check_images, class_indices, device_dtype, num_outputs

ORDERS = ("morf", "lerf", "random")
FILLS = ("blur", "noisy_linear", "mean", "zero")
NOISE_STD = 0.1  # of the "noisy_linear" fill, in normalised units
# ROAD's neighbour weights (Rong et al. 2022): (row offset, column offset), weight
ROAD_WEIGHTS = (((-1, -1), 1 / 12), ((-1, 0), 1 / 6), ((-1, 1), 1 / 12), ((0, -1), 1 / 6),
                ((0, 1), 1 / 6), ((1, -1), 1 / 12), ((1, 0), 1 / 6), ((1, 1), 1 / 12))


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

    ``"random"``: a random permutation per image from ``seed``; ``"morf"``: largest sum first;
    ``"lerf"``: smallest first. Ties of ``"morf"`` and ``"lerf"`` follow that same seeded random
    permutation (a sort by (score, random key)), not the region index, so tied regions (e.g. the
    zero-relevance ones) are not removed from the top-left first; without ties the seed is unused.
    """
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.argsort(torch.rand(scores.shape, generator=generator), dim=1)
    shuffle = shuffle.to(scores.device)
    if order == "random":
        ranking = shuffle
    else:
        shuffled = scores.gather(1, shuffle)
        within = torch.argsort(-shuffled if order == "morf" else shuffled, dim=1, stable=True)
        ranking = shuffle.gather(1, within)
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


def _static_fill(images: torch.Tensor, fill: str, patch: int) -> torch.Tensor | None:
    """The replacement image of the fills that do not depend on the removed pixels (None for
    ``"noisy_linear"``, which does)."""
    if fill == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images)
    if fill == "zero":
        return torch.zeros_like(images)
    if fill == "blur":
        return gaussian_blur(images, patch / 2)
    return None


def road_system(removed: np.ndarray) -> tuple[sparse.csc_matrix, sparse.csr_matrix]:
    """The sparse linear system of ROAD's linear imputation for one mask.

    Each removed pixel ``i`` is the weighted mean of its 8 neighbours inside the image
    (:data:`ROAD_WEIGHTS`: 1/6 direct, 1/12 diagonal, renormalised over the neighbours inside the
    image), removed or not: ``sum_j w_ij x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij v_j``.

    Parameters
    ----------
    removed : ndarray bool [H, W]
        At least one pixel removed and one kept.

    Returns
    -------
    matrix : csc_matrix [n, n]
        The left-hand side over the n removed pixels (row-major order); symmetric and positive
        definite (diagonally dominant, strictly so next to a kept pixel).
    coupling : csr_matrix [n, H * W]
        ``coupling @ v`` (v: the image flattened, one column per channel) is the right-hand side;
        it reads kept pixels only.
    """
    height, width = removed.shape
    where = np.flatnonzero(removed)
    n = len(where)
    unknown = np.full(removed.size, -1, dtype=np.int64)  # pixel -> its variable, -1 if kept
    unknown[where] = np.arange(n)
    rows, cols = np.divmod(where, width)
    diagonal = np.zeros(n)
    lhs, rhs = [], []  # (equation, variable or pixel, weight) per offset
    for (dr, dc), weight in ROAD_WEIGHTS:
        r, c = rows + dr, cols + dc
        equation = np.flatnonzero((r >= 0) & (r < height) & (c >= 0) & (c < width))
        pixel = r[equation] * width + c[equation]
        diagonal[equation] += weight
        hole = unknown[pixel] >= 0
        lhs.append((equation[hole], unknown[pixel[hole]], np.full(hole.sum(), -weight)))
        rhs.append((equation[~hole], pixel[~hole], np.full((~hole).sum(), weight)))
    lhs.append((np.arange(n), np.arange(n), diagonal))
    return _sparse(lhs, (n, n)).tocsc(), _sparse(rhs, (n, removed.size))


def _sparse(triplets: list[tuple[np.ndarray, ...]], shape: tuple[int, int]) -> sparse.csr_matrix:
    rows, cols, values = (np.concatenate(part) for part in zip(*triplets))
    return sparse.csr_matrix((values, (rows, cols)), shape=shape)


def _impute_one(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's linear imputation of one float64 image [C, H, W], without noise."""
    if not removed.any():
        return image
    if removed.all():
        return np.zeros_like(image)  # nothing kept to impute from
    channels = len(image)
    matrix, coupling = road_system(removed)
    rhs = coupling @ image.reshape(channels, -1).T  # [n, C]: one factorisation, C solves
    solution = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                    options={"SymmetricMode": True}).solve(rhs)
    out = image.copy()
    out.reshape(channels, -1)[:, np.flatnonzero(removed)] = solution.T
    return out


def noisy_linear_impute(images: torch.Tensor, removed: torch.Tensor,
                        noise: torch.Tensor | None = None) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022) of the removed pixels.

    For each image and channel, the removed pixels' values solve the sparse linear system of
    :func:`road_system`: each is the weighted mean of its 8 neighbours (1/6 direct, 1/12
    diagonal; neighbours outside the image are left out and the weights renormalised), the kept
    ones fixed at their values. The removed pixels' own values are never read. One sparse LU
    factorisation per (image, mask), shared by the channels; solved on the CPU in float64.

    Parameters
    ----------
    images : Tensor [B, C, H, W]
    removed : Tensor bool [B, H, W]
    noise : Tensor [B, C, H, W], optional
        Added to the removed pixels only.

    Returns
    -------
    Tensor [B, C, H, W]
        The kept pixels unchanged, the removed ones imputed (plus the noise). An image with every
        pixel removed has nothing to impute from: its removed pixels are 0 (plus the noise).
    """
    values = images.detach().to("cpu", torch.float64).numpy()
    masks = removed.detach().cpu().numpy()
    filled = np.stack([_impute_one(value, mask) for value, mask in zip(values, masks)])
    result = torch.from_numpy(filled).to(images.device, images.dtype)
    if noise is None:
        return result
    return torch.where(removed[:, None], result + noise, result)


def _fill_for(fill: str, static: torch.Tensor | None, noise: torch.Tensor | None,
              images: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    if fill != "noisy_linear":
        return static
    return noisy_linear_impute(images, removed, noise)


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
                        seed: int = 0, precision: str = "fp32") -> np.ndarray:
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
        Most relevant first, least relevant first, or a random permutation per image drawn from
        ``seed`` (the baseline). Ties of ``"morf"`` and ``"lerf"`` (e.g. regions of zero
        relevance) are broken by that same seeded permutation, not by the region index.
    patch : int
        Region side in pixels; edge regions are cut short when H or W is not a multiple.
    steps : int
        Number of perturbation steps after the unperturbed image.
    fill : {"blur", "noisy_linear", "mean", "zero"}
        What replaces a removed region:

        - ``"blur"``: the pixels of a Gaussian-blurred copy of the image (sigma = patch / 2,
          separable conv2d, radius ceil(3 sigma), replicated borders). The removed pixels'
          own values leak into it;
        - ``"noisy_linear"``: ROAD's noisy linear imputation (Rong et al. 2022; pytorch-grad-cam's
          ``NoisyLinearImputer``), see :func:`noisy_linear_impute`. At each step and for each
          channel the removed pixels solve a sparse linear system making each the weighted mean
          of its 8 neighbours (1/6 direct, 1/12 diagonal, renormalised at the image border),
          the kept pixels fixed, so nothing of the removed content leaks back; Gaussian noise of
          std ``NOISE_STD`` = 0.1 (normalised units), drawn once per image from ``seed`` and the
          same at every step, is added to the removed pixels. When every region is removed
          (the last step) there is nothing to impute from: the removed pixels are 0 plus the
          noise. Exact but slower than the others (one sparse factorisation per (image, step),
          on the CPU);
        - ``"mean"``: each channel's mean over the (unperturbed) image;
        - ``"zero"``: zeros in normalised space (the dataset mean colour, not black; the
          literature's black fill is ``-mean / std`` per channel).
    batch_size : int
        Images per forward pass.
    seed : int
        Seeds the random order (also the tie-break of ``"morf"`` and ``"lerf"``) and the noise of
        ``"noisy_linear"``.
    precision : {"fp32", "auto", "bf16", "fp16"}
        The forward passes' precision (:func:`chexlib.device.amp_dtype`). The curves measure the
        model's *predictions*, so a run passes its ``precision`` parameter and they use the
        arithmetic its predictions use (bf16 + channels-last on a CPU with native bf16: about
        twice as fast); the maps and the perturbed images stay float32. ``fp32`` by default.

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
        with torch.no_grad(), inference_format(model, device, precision) as (amp, memory_format):
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = torch.cat([plan.logits(model, start, batch_size, memory_format)
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
        static = None if self.static is None else self.static[image]
        noise = None if self.noise is None else self.noise[image]
        filled = _fill_for(self.fill, static, noise, self.images[image], removed)
        return torch.where(removed[:, None], filled, self.images[image]), image

    def logits(self, model: nn.Module, start: int, batch_size: int,
               memory_format: torch.memory_format | None = None) -> torch.Tensor:
        batch, image = self.perturbed(start, min(start + batch_size, self.total))
        if memory_format is not None:
            batch = batch.contiguous(memory_format=memory_format)
        out = model(batch).float()
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
