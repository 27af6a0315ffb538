"""Figures of chexlib.heatmap_quality (notebook 06): localisation, faithfulness, sanity, summary.

Each function takes a table or the curves of :mod:`chexlib.heatmap_quality.compare`, returns a
matplotlib Figure and shows nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from chexlib.display_names import display_name
from chexlib.heatmap_quality.sanity import CASCADE


def localisation_bars(scores: pd.DataFrame, chance: float, seed: int = 0) -> plt.Figure:
    """Relevance mass accuracy per method and outcome (bars, 95% bootstrap CI) and chance level.

    Parameters
    ----------
    scores : DataFrame
        :func:`~chexlib.heatmap_quality.compare.localisation_scores` (``method``, ``mass``,
        ``outcome``); no bars when empty.
    chance : float
        A random map's score (the mean area fraction of the masks), drawn as a dashed line.
    seed : int
        Seeds seaborn's bootstrap of the intervals.
    """
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    if len(scores):
        sns.barplot(scores, x="method", y="mass", hue="outcome", errorbar=("ci", 95), seed=seed,
                    ax=ax)
    ax.axhline(chance, color="black", linestyle="--", linewidth=1,
               label="random map (area fraction)")
    ax.set_ylabel("relevance mass accuracy")
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize=8)
    return fig


def perturbation_curves(curves: Mapping[tuple[str, str], np.ndarray],
                        methods: Sequence[str] | None = None,
                        orders: Sequence[str] = ("morf", "lerf")) -> plt.Figure:
    """Mean change of the logit per perturbation step, one panel per order, one line per method.

    Parameters
    ----------
    curves : dict (method, order) -> array [N, steps + 1]
        :func:`~chexlib.heatmap_quality.compare.faithfulness_curves` (column 0: unperturbed).
    methods : sequence of str, optional
        Lines in this order; default every method of ``curves``, in its order.
    orders : sequence of str
        Panels, left to right (titled in capitals).
    """
    if methods is None:
        methods = list(dict.fromkeys(name for name, _ in curves))
    fig, axes = plt.subplots(1, len(orders), figsize=(10, 3.4), layout="constrained",
                             sharey=True, squeeze=False)
    for ax, order in zip(axes[0], orders):
        for name in methods:
            c = curves[name, order]
            ax.plot((c - c[:, :1]).mean(axis=0), label=name)
        ax.set_title(order.upper())
        ax.set_xlabel("step (regions removed)")
    axes[0, 0].set_ylabel("mean change of the logit")
    axes[0, -1].legend(fontsize=8)
    return fig


def sanity_curves(randomisation: pd.DataFrame, blocks: Sequence[str] = CASCADE) -> plt.Figure:
    """Spearman correlation with the trained model's maps per randomisation step, per method.

    Parameters
    ----------
    randomisation : DataFrame
        :func:`~chexlib.heatmap_quality.sanity.cascading_randomisation` (``step``,
        ``spearman``, ``method``); the mean over images is drawn.
    blocks : sequence of str
        The cascade's blocks (x tick labels: their last name component, after "trained").
    """
    fig, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    sns.lineplot(randomisation, x="step", y="spearman", hue="method", errorbar=None, marker="o",
                 ax=ax)
    ax.set_xticks(range(len(blocks) + 1), ["trained", *[b.split(".")[-1] for b in blocks]],
                  rotation=40, fontsize=8)
    ax.set_ylabel("Spearman with the trained model's map")
    return fig


#: Metric-summary columns where a lower value is the better one.
LOWER_IS_BETTER = ("blank_rate", "shortcut", "class correlation", "AOPC LeRF")


def metric_summary_heatmap(summary: pd.DataFrame) -> plt.Figure:
    """The metric summary as an annotated table, one row per method, coloured per column.

    ``summary`` is :func:`~chexlib.heatmap_quality.summaries.metric_summary` (indexed by method).
    Each column has its own colour scale (the metrics have different ranges), oriented so that
    the better value is always the brighter colour: columns in :data:`LOWER_IS_BETTER` are
    reversed and marked "(lower is better)". A metric a method was not scored on reads
    "not measured" on grey.
    """
    values = summary.astype(float)
    fig, ax = plt.subplots(figsize=(1.25 * values.shape[1] + 2.5, 0.42 * len(values) + 1.4),
                           layout="constrained")
    cmap = plt.get_cmap("viridis")
    for j, column in enumerate(values.columns):
        col = values[column].to_numpy()
        finite = col[np.isfinite(col)]
        low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        for i, value in enumerate(col):
            if not np.isfinite(value):
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color="0.85"))
                ax.text(j + 0.5, i + 0.5, "not\nmeasured", ha="center", va="center", fontsize=7,
                        color="0.35")
                continue
            good = 0.5 if high == low else (value - low) / (high - low)
            if column in LOWER_IS_BETTER:
                good = 1.0 - good
            ax.add_patch(plt.Rectangle((j, i), 1, 1, color=cmap(good)))
            ax.text(j + 0.5, i + 0.5, f"{value:.2f}", ha="center", va="center", fontsize=9,
                    color="black" if good > 0.6 else "white")
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(len(values), 0)
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [
        f"{c}\n(lower is better)" if c in LOWER_IS_BETTER else c for c in values.columns],
        rotation=30, ha="right", fontsize=9)
    ax.set_yticks(np.arange(len(values)) + 0.5, [display_name(m) for m in values.index],
                  fontsize=9)
    ax.tick_params(length=0)
    ax.set_title("metric summary: each column on its own scale, brighter = better")
    return fig


def localisation_vs_auroc(by_observation: pd.DataFrame, outcome: str = "TP",
                          metric: str = "mass") -> plt.Figure:
    """Each observation's localisation (``metric`` minus its chance level) against its AUROC.

    ``by_observation`` is :func:`~chexlib.heatmap_quality.summaries.localisation_by_observation`;
    one point per observation and method (``outcome`` pairs), labelled with the observation and
    sized by the pairs behind it. Above the dashed line the maps localise better than a random
    map; a class the model detects well (high AUROC) need not be one its maps localise.
    """
    table = by_observation[by_observation["outcome"] == outcome].assign(
        excess=lambda t: t[metric] - t["chance"]).dropna(subset=["excess", "auroc"])
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    if len(table):
        sns.scatterplot(table, x="auroc", y="excess", hue="method", size="n", sizes=(20, 200),
                        ax=ax)
        for row in table.drop_duplicates("observation").itertuples():
            ax.annotate(row.observation, (row.auroc, row.excess), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("AUROC of the class (notebook 03)")
    ax.set_ylabel(f"{metric} minus chance, {outcome} pairs")
    ax.set_title("localisation against detection, per observation")
    return fig
