"""chexlib.heatmap_quality.faithfulness on toy models whose relevant pixels are known.

The main toy model's logit k is the sum of the image (all channels) over a fixed square S_k, so
the indicator of S_k is a perfect map of class k and every MoRF curve with the zero fill has a
closed form. References: those closed forms, scipy's ``gaussian_filter`` for the blur, and
Quantus's ``PixelFlipping`` where its definition coincides with region perturbation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from chexlib.errors import ParameterError
from chexlib.heatmap_quality import aopc, region_perturbation
from chexlib.heatmap_quality.faithfulness import (
    gaussian_blur,
    neighbour_mean,
    region_labels,
    removed_counts,
)

SIZE, PATCH = 16, 4  # 16 regions of 4 x 4
SQUARES = ((0, 8, 0, 8), (8, 16, 4, 12))  # S_0, S_1: rows / columns, each 4 regions


class SquareSums(nn.Module):
    """Logit k = sum of the image over the square S_k (fixed weights, no parameters)."""

    num_classes = len(SQUARES)

    def __init__(self):
        super().__init__()
        weight = torch.zeros(len(SQUARES), 3, SIZE, SIZE)
        for k, (top, bottom, left, right) in enumerate(SQUARES):
            weight[k, :, top:bottom, left:right] = 1.0
        self.register_buffer("weight", weight)
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return torch.einsum("bchw,kchw->bk", x, self.weight)


def square_maps(classes) -> torch.Tensor:
    """The perfect map of each image's class: the indicator of its square, [N, H, W]."""
    return SquareSums().weight[list(classes), 0].clone()


def toy_images(count: int, seed: int = 0) -> torch.Tensor:
    """Positive images, brighter inside both squares (so every fill lowers the logit)."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.1 + 0.2 * torch.rand(count, 3, SIZE, SIZE, generator=gen)
    return images + 1.5 * SquareSums().weight.amax(dim=0)


def analytic_morf_zero(image: torch.Tensor, k: int, steps: int) -> np.ndarray:
    """MoRF with zero fill: S_k's regions go first, in row-major order (the tie rule); the logit
    is the image's sum over the regions of S_k still present."""
    top, bottom, left, right = SQUARES[k]
    sums = [float(image[:, r:r + PATCH, c:c + PATCH].sum())
            for r in range(top, bottom, PATCH) for c in range(left, right, PATCH)]
    regions = (SIZE // PATCH) ** 2
    curve = []
    for s in range(steps + 1):
        removed = math.floor(s * regions / steps + 0.5)
        curve.append(sum(sums[min(removed, len(sums)):]))
    return np.array(curve)


@pytest.fixture
def model():
    return SquareSums().eval()


def test_removed_counts_and_regions():
    assert removed_counts(16, 16).tolist() == list(range(17))
    assert removed_counts(16, 5).tolist() == [0, 3, 6, 10, 13, 16]  # 3.2, 6.4, 9.6, 12.8
    assert removed_counts(10, 4).tolist() == [0, 3, 5, 8, 10]  # 2.5 and 7.5 round up
    labels, count = region_labels(10, 10, 4)  # edge tiles cut short: 4, 4, 2 pixels wide
    assert count == 9 and labels[0, :].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert labels[9, 9] == 8 and torch.bincount(labels.flatten()).tolist()[-1] == 4


@pytest.mark.parametrize("steps", [16, 5])
def test_morf_with_zero_fill_follows_the_analytic_curve(model, steps):
    images = toy_images(2)
    curves = region_perturbation(model, images, square_maps([0, 1]), [0, 1], patch=PATCH,
                                 steps=steps, fill="zero")
    assert curves.shape == (2, steps + 1) and curves.dtype == np.float64
    for i, k in enumerate([0, 1]):
        np.testing.assert_allclose(curves[i], analytic_morf_zero(images[i], k, steps), rtol=1e-5)
    with torch.no_grad():
        unperturbed = model(images).numpy()
    np.testing.assert_allclose(curves[:, 0], unperturbed[[0, 1], [0, 1]], rtol=1e-6)


@pytest.mark.parametrize("fill", ["zero", "mean", "blur", "noisy_linear"])
def test_morf_drops_fastest_lerf_slowest_and_aopc_orders_them(model, fill):
    images = toy_images(3, seed=1)
    classes = [0, 1, 1]
    maps = square_maps(classes)
    curves = {order: region_perturbation(model, images, maps, classes, order=order, patch=PATCH,
                                         fill=fill, seed=3)
              for order in ("morf", "lerf", "random")}
    scores = {order: aopc(curve) for order, curve in curves.items()}
    assert np.all(curves["morf"] <= curves["lerf"] + 1e-4)
    assert np.all(scores["morf"] > scores["random"]), scores
    assert np.all(scores["random"] > scores["lerf"]), scores
    # LeRF removes only zero-relevance regions for the first 12 of 16 steps: nothing changes
    # (every fill changes the removed pixels only, all outside S_k, and the model reads S_k).
    np.testing.assert_allclose(curves["lerf"][:, :13], curves["lerf"][:, :1].repeat(13, 1),
                               rtol=1e-6)


def test_multi_label_images_are_each_scored_for_their_own_class(model):
    image = toy_images(1, seed=2)
    images = image.repeat(2, 1, 1, 1)  # the same image explained for two classes
    classes = [1, 0]
    together = region_perturbation(model, images, square_maps(classes), classes, patch=PATCH,
                                   fill="zero", batch_size=5)
    for i, k in enumerate(classes):
        np.testing.assert_allclose(together[i], analytic_morf_zero(image[0], k, 16), rtol=1e-5)
        alone = region_perturbation(model, images[i:i + 1], square_maps([k]), [k], patch=PATCH,
                                    fill="zero")
        np.testing.assert_allclose(together[i], alone[0], rtol=1e-6)
    # the wrong map for the class: MoRF removes S_0's 4 regions first, then the rest in
    # row-major order, which reaches S_1's first region (index 9) at step 10
    wrong = region_perturbation(model, image, square_maps([0]), [1], patch=PATCH, fill="zero")
    np.testing.assert_allclose(wrong[0, :10], wrong[0, 0], rtol=1e-6)
    assert wrong[0, 10] < wrong[0, 9] and aopc(wrong)[0] < aopc(together[:1])[0] / 2


@pytest.mark.parametrize("count, steps, batch_size", [(3, 16, 8), (2, 5, 32), (1, 3, 1)])
def test_all_image_step_pairs_go_through_batched_forward_passes(model, count, steps, batch_size):
    sizes = []
    hook = model.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
    region_perturbation(model, toy_images(count), square_maps([0] * count), [0] * count,
                        patch=PATCH, steps=steps, batch_size=batch_size)
    hook.remove()
    pairs = count * (steps + 1)
    assert len(sizes) == math.ceil(pairs / batch_size)
    assert sum(sizes) == pairs and max(sizes) <= batch_size


def test_the_model_runs_in_eval_mode_and_its_mode_is_restored(model):
    model.train()
    region_perturbation(model, toy_images(1), square_maps([0]), [0], patch=PATCH, steps=2)
    assert model.training and model.modes and not any(model.modes)


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    images = torch.randn(2, 3, 20, 17, generator=torch.Generator().manual_seed(4),
                         dtype=torch.float64)
    for sigma in (1.0, 2.0, 4.0):
        ours = gaussian_blur(images, sigma).numpy()
        # radius ceil(3 sigma) = scipy's int(truncate * sigma + 0.5) for these sigmas
        expected = ndimage.gaussian_filter(images.numpy(), sigma=(0, 0, sigma, sigma),
                                           mode="nearest", truncate=3.0)
        np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_neighbour_mean_by_hand():
    source = torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4)
    removed = torch.zeros(1, 4, 4, dtype=torch.bool)
    removed[0, 1:3, 1:3] = True  # a 2 x 2 hole
    removed[0, 0, 0] = True  # a corner
    out = neighbour_mean(source, removed)[0, 0]
    # (1, 1): kept neighbours (0, 1) = 1 and (1, 0) = 4; its other two are in the hole
    assert out[1, 1] == (1 + 4) / 2
    assert out[2, 2] == (11 + 14) / 2
    assert out[0, 0] == (1 + 4) / 2  # corner: two in-image neighbours, both kept
    assert out[3, 3] == (11 + 14) / 2  # every pixel gets its mean; the caller keeps kept ones
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(neighbour_mean(source, full), source)  # no kept neighbour: itself


def test_fills_mean_blur_and_noise(model):
    images = toy_images(1, seed=5)
    maps = square_maps([0])
    mean = region_perturbation(model, images, maps, [0], patch=PATCH, fill="mean")
    channel_means = images[0].mean(dim=(1, 2))
    region_mean_sum = float(channel_means.sum()) * PATCH * PATCH
    zero = region_perturbation(model, images, maps, [0], patch=PATCH, fill="zero")
    # each removed region of S_0 is worth its own sum under "zero", the means' under "mean"
    np.testing.assert_allclose(mean[0, 4:], 4 * region_mean_sum, rtol=1e-5)
    np.testing.assert_allclose(mean[0, :5] - zero[0, :5], np.arange(5) * region_mean_sum,
                               rtol=1e-5)
    flat = torch.full((1, 3, SIZE, SIZE), 0.7)
    blurred = region_perturbation(model, flat, maps, [0], patch=PATCH, fill="blur")
    np.testing.assert_allclose(blurred, blurred[:, :1].repeat(17, 1), rtol=1e-6)  # constant
    noisy = [region_perturbation(model, flat, maps, [0], patch=PATCH, fill="noisy_linear",
                                 seed=seed) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert not np.allclose(noisy[0], noisy[2])
    # noise only: std 0.1 on each of the 192 removed values of S_0 -> logit std ~1.4
    assert 0.05 < np.abs(noisy[0][0, 4:] - noisy[0][0, 0]).max() < 10


def test_malformed_inputs_raise_parameter_errors(model):
    images, maps = toy_images(2), square_maps([0, 1])
    with pytest.raises(ParameterError, match=r"maps: shape \(2, 16, 8\).*\(2, 16, 16\)"):
        region_perturbation(model, images, maps[..., :8], [0, 1])
    with pytest.raises(ParameterError, match="classes: expected one class per image"):
        region_perturbation(model, images, maps, [0])
    with pytest.raises(ParameterError, match=r"classes: 5 is not .* index 0\.\.1"):
        region_perturbation(model, images, maps, [0, 5])
    model.num_classes = None  # output count unknown until the first forward pass
    with pytest.raises(ParameterError, match=r"classes: index 5 is beyond .*\(2, 2\)"):
        region_perturbation(model, images, maps, [0, 5], patch=PATCH, steps=2, batch_size=2)
    with pytest.raises(ParameterError, match="order='best'"):
        region_perturbation(model, images, maps, [0, 1], order="best")
    with pytest.raises(ParameterError, match="fill='black'.*zero"):
        region_perturbation(model, images, maps, [0, 1], fill="black")
    with pytest.raises(ParameterError, match="patch=0"):
        region_perturbation(model, images, maps, [0, 1], patch=0)
    with pytest.raises(ParameterError, match="images"):
        region_perturbation(model, images[:, :1], maps, [0, 1])


def test_aopc_by_hand():
    curves = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 4.0]])
    np.testing.assert_allclose(aopc(curves), [(1 + 2) / 2, (0 - 3) / 2])
    with pytest.raises(ParameterError, match="curves"):
        aopc(curves[:, :1])


# --------------------------------------------------------------------------------------------
# agreement with Quantus
# --------------------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """A small nonlinear model (conv, ReLU, linear) with seeded random weights."""

    num_classes = 3

    def __init__(self, size: int):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * size * size, self.num_classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("patch, regions_per_step", [(1, 1), (2, 1), (2, 4)])
def test_morf_curve_agrees_with_quantus_pixel_flipping(patch, regions_per_step):
    """Quantus's ``PixelFlipping`` ranks single features (pixel x channel, the map broadcast over
    the 3 channels) and removes ``features_in_step`` per step; chexlib ranks region sums. They
    coincide when the map is constant inside each region with distinct values across regions
    (each region's 3 * patch^2 features then sort together, whatever Quantus's unstable sort
    does with ties), ``features_in_step = 3 * patch^2 * regions_per_step``, ``steps = R /
    regions_per_step``, the fill is the constant 0 (``perturb_baseline=0.0``), and Quantus returns
    logits (``softmax=False``) without normalising the map. Quantus has no unperturbed column:
    it equals chexlib's columns 1..steps. With region sums that tie, or maps varying inside a
    region, the definitions differ (Quantus would split a region across steps). Tolerance 1e-5:
    float32 forward passes of differently composed batches."""
    quantus = pytest.importorskip("quantus", reason="Quantus not installed (pip install quantus)")
    size, count = 12, 3
    model = TinyCNN(size).eval()
    gen = torch.Generator().manual_seed(6)
    images = torch.randn(count, 3, size, size, generator=gen)
    coarse = torch.randperm(count * (size // patch) ** 2, generator=gen).float()
    maps = coarse.reshape(count, size // patch, size // patch)
    maps = maps.repeat_interleave(patch, 1).repeat_interleave(patch, 2)  # distinct per region
    classes = [0, 2, 1]
    steps = (size // patch) ** 2 // regions_per_step
    ours = region_perturbation(model, images, maps, classes, patch=patch, steps=steps,
                               fill="zero")
    metric = quantus.PixelFlipping(features_in_step=3 * patch**2 * regions_per_step,
                                   perturb_baseline=0.0, normalise=False, abs=False,
                                   disable_warnings=True)
    theirs = metric(model=model, x_batch=images.numpy(), y_batch=np.array(classes),
                    a_batch=maps[:, None].numpy(), channel_first=True, softmax=False,
                    device="cpu")
    np.testing.assert_allclose(ours[:, 1:], np.asarray(theirs), rtol=0, atol=1e-5)
    assert np.ptp(ours[:, 1:]) > 0.1  # the curves move
