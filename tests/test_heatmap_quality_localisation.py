"""chexlib.heatmap_quality.localisation on hand-made maps and masks with known answers.

References: closed forms (map = mask, disjoint map, uniform map = chance), the symmetry argument
for random maps, scikit-image's ``threshold_otsu`` for the batched Otsu threshold, and Quantus's
``PointingGame`` / ``RelevanceMassAccuracy`` / ``RelevanceRankAccuracy`` on single-label inputs
where their definitions coincide with chexlib's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chexlib.errors import ParameterError
from chexlib.heatmap_quality import (
    blank_maps,
    chance_level,
    otsu_iou,
    otsu_thresholds,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from chexlib.heatmap_quality.localisation import ZHANG_TOLERANCE

SIZE = 16
METRICS = (pointing_game, relevance_mass_accuracy, relevance_rank_accuracy, otsu_iou)


def square_masks() -> np.ndarray:
    """Three masks of different sizes and places, bool [3, 16, 16]."""
    masks = np.zeros((3, SIZE, SIZE), dtype=bool)
    masks[0, 2:6, 3:7] = True  # 16 px
    masks[1, 8:16, 0:8] = True  # 64 px
    masks[2, 5:6, 10:13] = True  # 3 px
    return masks


def all_scores(maps, masks) -> np.ndarray:
    return np.stack([metric(maps, masks) for metric in METRICS])


def test_a_map_equal_to_its_mask_scores_one_everywhere():
    masks = square_masks()
    scores = all_scores(masks.astype(np.float32), masks)
    np.testing.assert_array_equal(scores, np.ones((4, 3)))
    assert scores.dtype == np.float64


def test_a_map_positive_only_outside_its_mask_scores_zero_everywhere():
    masks = square_masks()
    # Positive on the complement, 0 inside: the complement holds > K pixels, so the K-th largest
    # value is a positive one and no mask pixel is tied with it.
    maps = np.where(masks, 0.0, 1.0) * (1 + np.arange(SIZE))  # not constant: Otsu has 2 classes
    np.testing.assert_array_equal(all_scores(maps, masks), np.zeros((4, 3)))
    # Negative inside does not help either.
    np.testing.assert_array_equal(all_scores(maps - 3.0 * masks, masks), np.zeros((4, 3)))


def test_a_uniform_map_scores_the_chance_level():
    masks = square_masks()
    area = masks.reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(chance_level(masks), area)
    uniform = np.full(masks.shape, 0.7)
    np.testing.assert_allclose(relevance_mass_accuracy(uniform, masks), area, rtol=1e-12)
    # every pixel ties with the K-th largest: the K places are shared out evenly
    np.testing.assert_allclose(relevance_rank_accuracy(uniform, masks), area, rtol=1e-12)
    np.testing.assert_array_equal(otsu_iou(uniform, masks), 0.0)  # constant: no foreground


def test_random_maps_score_chance_on_average():
    """i.i.d. pixels are exchangeable, so E[inside / total] = K / P exactly and E[rank accuracy]
    = K / P (hypergeometric); the tolerance is 5 standard errors of the mean over the trials."""
    trials = 4000
    masks = np.broadcast_to(square_masks()[1], (trials, SIZE, SIZE))  # area 0.25
    maps = np.random.default_rng(0).random((trials, SIZE, SIZE))
    for metric in (relevance_mass_accuracy, relevance_rank_accuracy):
        scores = metric(maps, masks)
        standard_error = scores.std(ddof=1) / np.sqrt(trials)
        assert abs(scores.mean() - 0.25) < 5 * standard_error, metric.__name__
    assert abs(chance_level(masks[:1])[0] - 0.25) < 1e-12


def test_negative_relevance_inside_the_mask_is_not_mass():
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, :2] = True  # top half
    one = np.zeros((1, 4, 4))
    one[0, 0, 0] = 1.0  # +1 inside
    one[0, 3, 0] = 1.0  # +1 outside
    one[0, 1, :] = -10.0  # strongly negative inside
    assert relevance_mass_accuracy(one, mask)[0] == 0.5
    assert np.isnan(relevance_mass_accuracy(-np.abs(one), mask)[0])  # no positive relevance: blank


def test_ties_empty_masks_torch_inputs_and_batch_independence():
    masks = square_masks()
    maps = np.random.default_rng(1).normal(size=masks.shape)
    empty = masks.copy()
    empty[1] = False
    for metric in METRICS:
        scores = metric(maps, empty)
        assert np.isnan(scores[1]) and not np.isnan(scores[[0, 2]]).any(), metric.__name__
        np.testing.assert_array_equal(metric(torch.from_numpy(maps), torch.from_numpy(masks)),
                                      metric(maps, masks.astype(np.uint8)))
        one_by_one = np.concatenate([metric(maps[i:i + 1], masks[i:i + 1]) for i in range(3)])
        np.testing.assert_array_equal(metric(maps, masks), one_by_one)
    assert np.isnan(chance_level(empty)[1])


def test_malformed_inputs_raise_parameter_errors_naming_the_argument():
    masks = square_masks()
    maps = masks.astype(float)
    for metric in METRICS:
        with pytest.raises(ParameterError, match=r"masks.*\(3, 16, 8\).*\(3, 16, 16\)"):
            metric(maps, masks[..., :8])
        with pytest.raises(ParameterError, match=r"maps: expected shape \[N, H, W\]"):
            metric(maps[0], masks[0])
    with pytest.raises(ValueError, match="masks: expected only 0 and 1"):
        pointing_game(maps, masks * 2.0)
    with pytest.raises(ParameterError, match="maps: contains NaN"):
        pointing_game(np.where(masks, np.nan, 0.0), masks)


def test_otsu_threshold_and_iou_agree_with_scikit_image():
    """Same 256-bin histogram of the clipped map, same bin-centre threshold, same `> t` rule.
    They can only differ when rounding moves a pixel across a bin edge (our floor of the
    min-max-scaled value vs numpy's histogram), which shifts the threshold by at most one bin
    and the IoU by a few pixels over the union: tolerances 1 bin and 0.01 (observed: equal)."""
    filters = pytest.importorskip("skimage.filters", reason="scikit-image not installed")
    rng = np.random.default_rng(2)
    count, size = 24, 40
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(8, 32, (2, count, 1, 1))
    radius = rng.uniform(3, 10, (count, 1, 1))
    distance = (yy - cy) ** 2 + (xx - cx) ** 2
    noise = rng.normal(0, rng.uniform(0.02, 0.3, (count, 1, 1)), (count, size, size))
    maps = np.exp(-distance / (2 * radius**2)) + noise - 0.1  # signed
    masks = distance < (1.2 * radius) ** 2
    positive = np.clip(maps, 0, None)
    reference = np.array([filters.threshold_otsu(p) for p in positive])
    one_bin = (positive.max(axis=(1, 2)) - positive.min(axis=(1, 2))) / 256
    assert np.all(np.abs(otsu_thresholds(maps) - reference) <= one_bin)
    foreground = positive > reference[:, None, None]
    expected = (foreground & masks).sum(axis=(1, 2)) / (foreground | masks).sum(axis=(1, 2))
    np.testing.assert_allclose(otsu_iou(maps, masks), expected, atol=0.01)
    assert 0.3 < expected.mean() < 0.9  # the cases are neither trivial nor hopeless


# --------------------------------------------------------------------------------------------
# agreement with Quantus
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantus():
    return pytest.importorskip("quantus", reason="Quantus not installed (pip install quantus)")


def _quantus_scores(metric_class, maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """A Quantus localisation metric on channel-first single-label inputs, as float64 [N].

    No normalisation, no abs: the maps are scored as given (the metrics never call the model).
    """
    metric = metric_class(normalise=False, abs=False, disable_warnings=True)
    count = len(maps)
    scores = metric(model=None, x_batch=np.zeros((count, 1, *maps.shape[1:]), np.float32),
                    y_batch=np.zeros(count, dtype=int), a_batch=maps[:, None].astype(np.float32),
                    s_batch=masks[:, None], channel_first=True)
    return np.asarray(scores, dtype=np.float64)


def _tie_free_cases(count: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative continuous maps (no ties: Quantus breaks rank ties by an unstable sort and
    counts a pointing-game hit if *any* tied maximum is inside), half of them peaked inside."""
    rng = np.random.default_rng(3)
    masks = np.zeros((count, SIZE, SIZE), dtype=bool)
    for i in range(count):
        top, left = rng.integers(0, SIZE - 6, 2)
        masks[i, top:top + rng.integers(2, 7), left:left + rng.integers(2, 7)] = True
    maps = rng.random((count, SIZE, SIZE)) + 0.6 * masks * (np.arange(count) % 2)[:, None, None]
    return maps, masks


@pytest.mark.parametrize("ours, theirs", [
    (pointing_game, "PointingGame"),
    (relevance_mass_accuracy, "RelevanceMassAccuracy"),
    (relevance_rank_accuracy, "RelevanceRankAccuracy"),
])
def test_agrees_with_quantus_on_single_label_tie_free_non_negative_maps(quantus, ours, theirs):
    maps, masks = _tie_free_cases()
    expected = _quantus_scores(getattr(quantus, theirs), maps, masks)
    # Quantus computes in float32 (its inputs): 1e-6 covers that rounding.
    np.testing.assert_allclose(ours(maps, masks), expected, rtol=0, atol=1e-6)
    assert 0 < np.ptp(expected)  # the cases do not all score the same


@pytest.mark.filterwarnings("ignore:Return np.nan as result:UserWarning")
def test_where_quantus_differs_signed_maps_and_empty_masks(quantus):
    """Documented differences: Quantus's relevance mass divides by the *signed* total (chexlib:
    positive relevance only, as Arras et al.), and its pointing game returns a hit (True) for an
    empty mask where chexlib returns NaN (Quantus's mass / rank accuracy return NaN there too)."""
    mask = np.zeros((1, SIZE, SIZE), dtype=bool)
    mask[0, :4, :4] = True  # 16 px
    signed = np.where(mask, 1.0, 0.0)
    signed[0, 8:12, 8:10] = -1.0  # 8 px of negative relevance outside
    assert relevance_mass_accuracy(signed, mask)[0] == 1.0
    quantus_mass = _quantus_scores(quantus.RelevanceMassAccuracy, signed, mask)[0]
    assert quantus_mass == pytest.approx(16 / (16 - 8))
    maps, _ = _tie_free_cases(2)
    empty = np.zeros((2, SIZE, SIZE), dtype=bool)
    assert np.isnan(pointing_game(maps, empty)).all()
    assert np.all(_quantus_scores(quantus.PointingGame, maps, empty) == 1.0)
    assert np.isnan(_quantus_scores(quantus.RelevanceMassAccuracy, maps, empty)).all()


# ------------------------------------------------------------------ blank and tied maps


def test_a_blank_map_is_nan_in_every_metric():
    masks = np.zeros((3, 6, 6), dtype=bool)
    masks[:, 1:4, 1:4] = True
    maps = np.zeros((3, 6, 6))
    maps[1] = -1.0  # only negative relevance: blank too
    maps[2, 2, 2] = 0.5  # one positive pixel, inside: defined
    for metric in METRICS:
        scores = metric(maps, masks)
        assert np.isnan(scores[:2]).all() and np.isfinite(scores[2]), metric.__name__
    np.testing.assert_array_equal(blank_maps(maps), [True, True, False])


def test_tied_maxima_score_their_expected_hit():
    tied = np.zeros((1, 4, 4))
    tied[0, 0, 3] = tied[0, 2, 0] = tied[0, 3, 3] = 1.0  # three maxima
    inside = np.zeros((1, 4, 4), dtype=bool)
    inside[0, 2:, :] = True  # holds two of them
    assert pointing_game(tied, inside)[0] == pytest.approx(2 / 3)
    # Hand-made: a 4x4 plateau of maxima (a coarse map upsampled), the mask on a quarter of it.
    plateau = np.zeros((1, 8, 8))
    plateau[0, 2:6, 2:6] = 1.0
    quarter = np.zeros((1, 8, 8), dtype=bool)
    quarter[0, 2:4, 2:4] = True
    assert pointing_game(plateau, quarter)[0] == pytest.approx(0.25)
    # Ranks: the K = 4 top places go to the 16 tied pixels, 4 of them inside: 4 * 4/16 = 1 hit.
    assert relevance_rank_accuracy(plateau, quarter)[0] == pytest.approx(0.25)


def test_pointing_game_tolerance_counts_a_maximum_near_the_mask():
    peak = np.zeros((1, 20, 20))
    peak[0, 10, 15] = 1.0
    mask = np.zeros((1, 20, 20), dtype=bool)
    mask[0, 8:13, 5:11] = True  # the peak is 5 px right of the mask's edge
    assert pointing_game(peak, mask)[0] == 0.0
    assert pointing_game(peak, mask, tolerance=4.9)[0] == 0.0
    assert pointing_game(peak, mask, tolerance=5)[0] == 1.0
    assert pointing_game(peak, mask, tolerance=ZHANG_TOLERANCE)[0] == 1.0
    with pytest.raises(ParameterError, match="tolerance"):
        pointing_game(peak, mask, tolerance=-1)
