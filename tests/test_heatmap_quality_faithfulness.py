"""chexlib.heatmap_quality.faithfulness on toy models whose relevant pixels are known.

The main toy model's logit k is the sum of the image (all channels) over a fixed square S_k, so
the indicator of S_k is a perfect map of class k and every MoRF curve with the zero fill has a
closed form. References: those closed forms, scipy's ``gaussian_filter`` for the blur,
pytorch-grad-cam's ``NoisyLinearImputer`` for ROAD's imputation, and Quantus's ``PixelFlipping``
where its definition coincides with region perturbation.
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
    noisy_linear_impute,
    region_labels,
    removal_rank,
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
    """A perfect map of each image's class, [N, H, W]: zero outside its square, and inside it
    positive and decreasing with the region index (row-major), so that MoRF removes the square's
    regions in row-major order without relying on the tie-break (ties are broken at random)."""
    labels, count = region_labels(SIZE, SIZE, PATCH)
    graded = 1.0 + (count - labels).float() / count
    return SquareSums().weight[list(classes), 0] * graded


def toy_images(count: int, seed: int = 0) -> torch.Tensor:
    """Positive images, brighter inside both squares (so every fill lowers the logit)."""
    gen = torch.Generator().manual_seed(seed)
    images = 0.1 + 0.2 * torch.rand(count, 3, SIZE, SIZE, generator=gen)
    return images + 1.5 * SquareSums().weight.amax(dim=0)


def analytic_morf_zero(image: torch.Tensor, k: int, steps: int) -> np.ndarray:
    """MoRF with zero fill: S_k's regions go first, in row-major order (the graded map); the
    logit is the image's sum over the regions of S_k still present."""
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
    # ROAD imputes from the kept pixels: when one region is left (step 15) it may lie in the other
    # class's bright square, whose brightness the imputation spreads over S_k (MoRF's logit then
    # rises to about the unperturbed one), so for "noisy_linear" the pointwise check stops there
    last = 15 if fill == "noisy_linear" else 17
    assert np.all(curves["morf"][:, :last] <= curves["lerf"][:, :last] + 1e-4)
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
    # the wrong map for the class: MoRF removes S_0's 4 regions first (class 1 does not read
    # them), then the 12 zero-relevance regions in a seeded random order, which include S_1's
    wrong = region_perturbation(model, image, square_maps([0]), [1], patch=PATCH, fill="zero")
    np.testing.assert_allclose(wrong[0, :5], wrong[0, 0], rtol=1e-6)
    assert np.all(np.diff(wrong[0]) <= 1e-5) and abs(wrong[0, -1]) < 1e-5
    assert aopc(wrong)[0] < aopc(together[:1])[0]


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


def test_noisy_linear_imputation_by_hand():
    """Each removed pixel is the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal,
    renormalised over those inside the image), removed ones included."""
    source = torch.arange(25, dtype=torch.float64).reshape(1, 1, 5, 5) ** 2
    removed = torch.zeros(1, 5, 5, dtype=torch.bool)
    removed[0, 2, 2] = removed[0, 0, 4] = True  # alone: all their neighbours are kept
    out = noisy_linear_impute(source, removed)[0, 0]
    v = source[0, 0]
    centre = (v[1, 2] + v[3, 2] + v[2, 1] + v[2, 3]) / 6 + (
        v[1, 1] + v[1, 3] + v[3, 1] + v[3, 3]) / 12
    corner = ((v[0, 3] + v[1, 4]) / 6 + v[1, 3] / 12) / (2 / 6 + 1 / 12)
    torch.testing.assert_close(out[2, 2], centre, rtol=1e-12, atol=0)
    torch.testing.assert_close(out[0, 4], corner, rtol=1e-12, atol=0)
    torch.testing.assert_close(out[~removed[0]], v[~removed[0]], rtol=0, atol=0)  # kept: as is
    # a linear ramp is reproduced exactly in an inner hole (the stencil is symmetric)
    ramp = (2.0 * torch.arange(12)[:, None] - 0.5 * torch.arange(12)[None, :]).double()
    hole = torch.zeros(1, 12, 12, dtype=torch.bool)
    hole[0, 2:9, 3:10] = True
    torch.testing.assert_close(noisy_linear_impute(ramp[None, None], hole)[0, 0], ramp,
                               rtol=0, atol=1e-10)
    everything = torch.ones(1, 5, 5, dtype=torch.bool)  # nothing kept: 0
    assert not noisy_linear_impute(source, everything).any()


def road_masks(height: int, width: int, seed: int) -> dict[str, torch.Tensor]:
    """A random pixel mask and a blocky (4 x 4 regions) one, both touching every border."""
    gen = torch.Generator().manual_seed(seed)
    scattered = torch.rand(height, width, generator=gen) < 0.4
    blocks = torch.rand(math.ceil(height / 4), math.ceil(width / 4), generator=gen) < 0.5
    blocky = blocks.repeat_interleave(4, 0).repeat_interleave(4, 1)[:height, :width].clone()
    for mask in (scattered, blocky):
        mask[0, :3] = mask[-1, -3:] = mask[:3, -1] = mask[-3:, 0] = True  # corners and edges
        mask[height // 2, width // 2] = False  # something is kept
    return {"random": scattered, "blocky": blocky}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy on tensors, in theirs
@pytest.mark.parametrize("kind", ["random", "blocky"])
def test_noisy_linear_imputation_matches_pytorch_grad_cam(kind):
    """pytorch-grad-cam's ``NoisyLinearImputer`` (from ROAD's reference code; float32 image,
    mask 1 = kept, noise=0) on the same image and mask. Tolerance: max abs difference <= 1e-6 of
    the image's range (theirs is rounded to float32 at the end; measured ~2e-8 of the range)."""
    from pytorch_grad_cam.metrics import road  # the test extra: required, never skipped
    height, width = 23, 18
    image = torch.randn(3, height, width, generator=torch.Generator().manual_seed(7))
    removed = road_masks(height, width, seed=8)[kind]
    ours = noisy_linear_impute(image[None].double(), removed[None])[0]
    theirs = road.NoisyLinearImputer(noise=0.0)(image, (~removed).float()).double()
    span = float(image.max() - image.min())
    assert float((ours - theirs).abs().max()) <= 1e-6 * span
    assert float((ours - image)[:, removed].abs().max()) > 0.1 * span  # the imputation acts


def test_noisy_linear_imputation_ignores_the_removed_pixels():
    """The leak of the old fill is gone: the removed pixels' own values are never read."""
    gen = torch.Generator().manual_seed(9)
    images = torch.randn(2, 3, 16, 20, generator=gen, dtype=torch.float64)
    masks = road_masks(16, 20, seed=10)
    removed = torch.stack([masks["random"], masks["blocky"]])
    changed = torch.where(removed[:, None], 100 * torch.randn(images.shape, generator=gen,
                                                              dtype=torch.float64), images)
    torch.testing.assert_close(noisy_linear_impute(changed, removed),
                               noisy_linear_impute(images, removed), rtol=0, atol=1e-9)
    noise = torch.randn(images.shape, generator=gen, dtype=torch.float64)
    noisy = noisy_linear_impute(images, removed, noise)
    torch.testing.assert_close(noisy - noisy_linear_impute(images, removed),
                               noise * removed[:, None], rtol=0, atol=1e-12)  # removed only


def test_morf_and_lerf_break_ties_at_random_by_seed():
    distinct = torch.tensor([[0.5, 3.0, -1.0, 2.0, 0.0]], dtype=torch.float64)
    for seed in (0, 1):
        assert removal_rank(distinct, "morf", seed).tolist() == [[2, 0, 4, 1, 3]]
        assert removal_rank(distinct, "lerf", seed).tolist() == [[2, 4, 0, 3, 1]]
    tied = torch.zeros(1, 40, dtype=torch.float64)
    tied[0, 7], tied[0, 21] = 2.0, 1.0  # two distinct leaders, 38 tied regions
    orders = {}
    for order in ("morf", "lerf"):
        for seed in (0, 1, 0):
            rank = removal_rank(tied, order, seed)[0]
            ranking = torch.argsort(rank).tolist()  # region removed at each position
            if order == "morf":
                assert ranking[:2] == [7, 21]
                ties = ranking[2:]
            else:
                assert ranking[-2:] == [21, 7]
                ties = ranking[:-2]
            assert sorted(ties) == sorted(set(range(40)) - {7, 21})
            assert ties != sorted(ties)  # not the region-index order
            orders.setdefault((order, seed), ties)
            assert orders[(order, seed)] == ties  # the same seed: the same order
        assert orders[(order, 0)] != orders[(order, 1)]


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
    # ROAD imputes a flat image exactly: noise only, std 0.1 on each of the 192 removed values
    # of S_0 -> logit std ~1.4 (steps 4..15: S_0 gone, something kept)
    assert 0.05 < np.abs(noisy[0][0, 4:16] - noisy[0][0, 0]).max() < 10
    # the last step removes everything: nothing to impute from, 0 plus the noise
    assert abs(noisy[0][0, 16]) < 10 < noisy[0][0, 0]


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


class ConvSums(nn.Module):
    """A 3x3 convolution that copies its input (centre tap 1, zero padding) then
    :class:`SquareSums`: autocast applies to the convolution, so its output dtype shows the
    precision the forward pass ran in."""

    num_classes = len(SQUARES)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 1, 1] = torch.eye(3)
        self.sums = SquareSums()
        self.seen = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append((y.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        return self.sums(y.float())


def test_precision_runs_the_forward_passes_in_bf16_channels_last_and_restores_the_model():
    # The curves measure the model's predictions, so a run passes its precision: bf16 autocast
    # and channels-last here (forced: the same on CPUs with and without native bf16), float32
    # NCHW by default. The bf16 curve equals the analytic float32 one to bf16's 8 mantissa bits.
    images = toy_images(2)
    maps = square_maps([0, 1])
    net = ConvSums().eval()
    exact = region_perturbation(net, images, maps, [0, 1], patch=PATCH, steps=4, fill="zero")
    assert {seen for seen in net.seen} == {(torch.float32, False)}
    net.seen.clear()
    with pytest.warns(RuntimeWarning) if not _native_bf16() else _nothing():
        fast = region_perturbation(net, images, maps, [0, 1], patch=PATCH, steps=4, fill="zero",
                                   precision="bf16")
    assert {seen for seen in net.seen} == {(torch.bfloat16, True)}
    for i, k in enumerate([0, 1]):
        np.testing.assert_allclose(exact[i], analytic_morf_zero(images[i], k, 4), rtol=1e-5)
    np.testing.assert_allclose(fast, exact, rtol=2 ** -7, atol=1e-6 * np.abs(exact).max())
    assert net.conv.weight.is_contiguous() and net.conv.weight.dtype == torch.float32


def _native_bf16() -> bool:
    from chexlib.device import cpu_has_native_bf16

    return cpu_has_native_bf16()


def _nothing():
    import contextlib

    return contextlib.nullcontext()
