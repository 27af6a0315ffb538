"""chexlib.heatmap_quality.artefacts: the blockiness ratio on maps whose grid is known."""

from __future__ import annotations

import numpy as np
import pytest

from chexlib.heatmap_quality.artefacts import blockiness, blockiness_table


def _blocks(size: int, rng) -> np.ndarray:
    """Maps made of constant size x size blocks: every jump sits at a block edge."""
    return np.kron(rng.normal(size=(6, 64 // size, 64 // size)), np.ones((1, size, size)))


def test_pure_blocks_score_their_period_and_noise_scores_one():
    rng = np.random.default_rng(0)
    assert blockiness(_blocks(4, rng), 4) == pytest.approx(4.0)
    assert blockiness(_blocks(8, rng), 8) == pytest.approx(8.0)
    # 4 px blocks seen at period 8: jumps at two of eight positions -> 8 / 2.
    assert blockiness(_blocks(4, rng), 8) == pytest.approx(4.0, rel=0.05)
    noise = rng.normal(size=(20, 64, 64))
    assert 1.0 <= blockiness(noise, 4) < 1.05 and 1.0 <= blockiness(noise, 8) < 1.08
    smooth = np.cumsum(np.cumsum(rng.normal(size=(10, 64, 64)), axis=1), axis=2)
    assert blockiness(smooth, 4) < 1.1


def test_the_ratio_grows_with_the_grids_contrast():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(20, 64, 64))
    grid = np.zeros((64, 64))
    grid[:, ::4] = 1.0  # a stripe every 4th column
    ratios = [blockiness(noise + contrast * grid, 4) for contrast in (0.0, 0.5, 1.0, 2.0)]
    assert ratios == sorted(ratios) and ratios[0] < 1.02 and ratios[-1] > 1.25


def test_scale_and_blank_maps():
    rng = np.random.default_rng(2)
    maps = _blocks(4, rng)
    scaled = maps * np.array([1e-6, 1, 1e6, 1, 1, 1])[:, None, None]  # every map weighs the same
    assert blockiness(scaled, 4) == pytest.approx(blockiness(maps, 4))
    with_blank = np.concatenate([maps, np.zeros((3, 64, 64))])
    assert blockiness(with_blank, 4) == pytest.approx(blockiness(maps, 4))  # blank maps left out
    assert np.isnan(blockiness(np.ones((2, 32, 32)), 4))


def test_bad_period_or_size_is_refused():
    with pytest.raises(ValueError, match="period=1"):
        blockiness(np.zeros((16, 16)), 1)
    with pytest.raises(ValueError, match=r"H, W >= 16 for period 8"):
        blockiness(np.zeros((12, 40)), 8)


def test_table_per_method():
    rng = np.random.default_rng(3)
    table = blockiness_table({"blocks": _blocks(4, rng), "noise": rng.normal(size=(6, 64, 64))})
    assert list(table.index) == ["blocks", "noise"] and list(table["maps"]) == [6, 6]
    assert table.loc["blocks", "period_4"] == pytest.approx(4.0)
    assert table.loc["noise", "period_8"] < 1.1
