"""Cascading randomisation: Spearman against scipy, and the cascade's behaviour on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from chexlib.heatmap_quality.sanity import CASCADE, cascading_randomisation, spearman
from chexlib.explain import gradcam
from chexlib.model import densenet121


def test_spearman_matches_scipy_and_handles_constant_maps():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 6, 7)), rng.normal(size=(5, 6, 7))
    b[1] = a[1] * 3 + 1  # monotone: 1
    b[2] = -a[2]  # reversed: -1
    expected = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), expected, atol=1e-12)
    assert spearman(np.ones((1, 3, 3)), a[:1, :3, :3])[0] != spearman(a[:1], a[:1])[0]
    assert np.isnan(spearman(np.ones((1, 3, 3)), a[:1, :3, :3])[0])


def test_spearman_gives_ties_their_average_rank_as_scipy():
    # Rectified maps: mostly zero, in different places. Pixel-order ranks of the zeros would
    # correlate them by position; average ranks (scipy) do not.
    rng = np.random.default_rng(3)
    a = np.clip(rng.normal(size=(6, 8, 8)) - 1.0, 0, None)
    b = np.clip(rng.normal(size=(6, 8, 8)) - 1.0, 0, None)
    b[0] = np.round(a[0], 1)  # ties inside a monotone copy
    expected = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(spearman(a, b), expected, atol=1e-12)
    step = np.zeros((1, 4, 4))
    step[0, 2:] = 1.0  # two tied levels: rank correlation with itself is exactly 1
    assert spearman(step, step)[0] == pytest.approx(1.0)


def test_cascade_leaves_an_input_only_map_unchanged_and_changes_gradcam():
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none").eval()
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = cascading_randomisation(
        model, images, [3, 7], blocks=CASCADE[:3],
        methods={"input": lambda m, x, c: x.sum(1, keepdim=True).expand(-1, c.shape[1], -1, -1),
                 "gradcam": lambda m, x, c: gradcam(m, x, c, relu=False)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(table["step"]) == {0, 1, 2, 3} and len(table) == 2 * 4 * 2
    by = table.groupby(["method", "step"])["spearman"].mean()
    assert (by["input"] == 1.0).all()  # a map that ignores the model fails the sanity check
    assert by["gradcam"][3] < 0.9  # Grad-CAM changes when the top blocks are randomised
    with pytest.raises(KeyError):
        cascading_randomisation(model, images, [0, 0], {"gradcam": lambda m, x, c: x},
                                blocks=["features.nope"])


def test_cosine_similarity_of_maps_and_of_a_blank_map():
    from chexlib.heatmap_quality.sanity import cosine_similarity

    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert cosine_similarity(a, 2 * a) == pytest.approx(1.0)
    assert cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert cosine_similarity(a, np.array([[0.0, 1.0], [1.0, 0.0]])) == 0.0
    assert np.isnan(cosine_similarity(a, np.zeros((2, 2))))  # blank: undefined, not 0
