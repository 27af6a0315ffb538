"""chexlib.plots.heatmap_quality: notebook 06's figures, their axes, lines, bars and labels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from chexlib.heatmap_quality.sanity import CASCADE
from chexlib.plots.heatmap_quality import (
    localisation_bars,
    metric_summary_heatmap,
    perturbation_curves,
    sanity_curves,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_localisation_bars_one_bar_per_method_and_outcome_and_the_chance_line():
    scores = pd.DataFrame({"method": ["a", "a", "b", "b", "a", "b"],
                           "outcome": ["TP", "TP", "TP", "FN", "FN", "FN"],
                           "mass": [0.2, 0.4, 0.8, 0.5, 0.1, 0.7]})
    fig = localisation_bars(scores, chance=0.05, seed=0)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 6) for p in ax.patches if p.get_height() > 0)
    assert heights == sorted([0.3, 0.8, 0.1, 0.6])  # mean mass per (method, outcome)
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [0.05, 0.05]
    assert ax.get_ylabel() == "relevance mass accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert "random map (area fraction)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_localisation_bars_without_scores_still_draw_the_chance_level():
    empty = pd.DataFrame(columns=["method", "outcome", "mass"])
    ax = localisation_bars(empty, chance=0.2).axes[0]
    assert not ax.patches and len(ax.get_lines()) == 1


def test_perturbation_curves_plot_the_mean_change_per_method_and_order():
    rng = np.random.default_rng(0)
    curves = {(name, order): rng.normal(size=(5, 7)) for name in ("x", "y")
              for order in ("morf", "lerf")}
    fig = perturbation_curves(curves)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    for ax, order in zip(fig.axes, ("morf", "lerf")):
        assert ax.get_title() == order.upper()
        assert ax.get_xlabel() == "step (regions removed)"
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["x", "y"]
        for line, name in zip(lines, ("x", "y")):
            c = curves[name, order]
            np.testing.assert_allclose(line.get_ydata(), (c - c[:, :1]).mean(axis=0))
    assert fig.axes[0].get_ylabel() == "mean change of the logit"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["x", "y"]
    only_y = perturbation_curves(curves, ["y"])
    assert [line.get_label() for line in only_y.axes[0].get_lines()] == ["y"]


def test_sanity_curves_mean_over_images_per_step_with_block_ticks():
    table = pd.DataFrame({"method": ["m"] * 6, "step": [0, 0, 1, 1, 2, 2], "image": [0, 1] * 3,
                          "spearman": [1.0, 1.0, 0.6, 0.2, 0.1, -0.1]})
    fig = sanity_curves(table, blocks=("classifier", "features.norm5"))
    ax = fig.axes[0]
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len(lines) == 1
    np.testing.assert_allclose(lines[0].get_ydata(), [1.0, 0.4, 0.0], atol=1e-12)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["trained", "classifier", "norm5"]
    assert ax.get_ylabel() == "Spearman with the trained model's map"
    default = sanity_curves(table).axes[0]
    assert len(default.get_xticklabels()) == len(CASCADE) + 1


def test_metric_summary_heatmap_scales_each_column_and_marks_what_is_missing():
    summary = pd.DataFrame({"mass": [0.5, 0.25], "AOPC gap": [np.nan, 1.5],
                            "shortcut": [0.1, 0.3]},
                           index=pd.Index(["gradcam", "b"], name="method"))
    fig = metric_summary_heatmap(summary)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.50", "0.25", "not\nmeasured", "1.50", "0.10", "0.30"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Grad-CAM", "b"]  # display names
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "mass", "AOPC gap", "shortcut\n(lower is better)"]
    assert ax.get_title().startswith("metric summary")
    # Per column, the better value gets the brightest colour: the higher mass, the lower share.
    viridis = plt.get_cmap("viridis")
    colours = {(round(p.get_x()), round(p.get_y())): p.get_facecolor() for p in ax.patches}
    np.testing.assert_allclose(colours[(0, 0)], viridis(1.0))  # mass 0.50 of [0.25, 0.50]
    np.testing.assert_allclose(colours[(0, 1)], viridis(0.0))
    np.testing.assert_allclose(colours[(2, 0)], viridis(1.0))  # shortcut 0.10: lower is better
    np.testing.assert_allclose(colours[(1, 1)], viridis(0.5))  # one value: the middle


def test_localisation_vs_auroc_draws_one_point_per_observation_and_method():
    from chexlib.plots.heatmap_quality import localisation_vs_auroc

    table = pd.DataFrame({
        "observation": ["Edema", "Edema", "Cardiomegaly", "Cardiomegaly", "Fracture"],
        "method": ["a", "b", "a", "b", "a"], "outcome": ["TP", "TP", "TP", "TP", "FN"],
        "n": [20, 20, 15, 15, 3], "chance": [0.2, 0.2, 0.1, 0.1, 0.3],
        "mass": [0.5, 0.1, np.nan, 0.3, 0.4], "auroc": [0.9, 0.9, 0.7, 0.7, 0.6]})
    fig = localisation_vs_auroc(table)
    ax = fig.axes[0]
    points = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
    # Edema a and b, Cardiomegaly b (a is NaN); the FN row is not drawn.
    np.testing.assert_allclose(sorted(map(tuple, points)), [(0.7, 0.2), (0.9, -0.1), (0.9, 0.3)],
                               atol=1e-12)
    assert {t.get_text() for t in ax.texts} == {"Edema", "Cardiomegaly"}
    plt.close(fig)
