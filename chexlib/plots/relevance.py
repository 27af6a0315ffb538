"""Plots of where LRP relevance goes and of grid artefacts (notebook 04).

:func:`share_bars` draws :func:`chexlib.explain.conservation.share_summary` (the share of the
logits the pixels, the classifier bias, the BatchNorm shifts and the rest take, per composite);
:func:`blockiness_bars` draws :func:`chexlib.heatmap_quality.artefacts.blockiness_table`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

#: Colours of the parts of a logit, in :data:`chexlib.explain.conservation.SHARES` order.
SHARE_COLOURS = {"pixels": "#c0392b", "classifier": "#7f8c8d", "batchnorm": "#2980b9",
                 "rest": "#f1c40f"}


def share_bars(summary: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Figure:
    """Stacked horizontal bars: per composite, the share of the logits each part takes.

    Parameters
    ----------
    summary : DataFrame
        :func:`chexlib.explain.conservation.share_summary` (index: composites).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.35 * len(summary) + 1.2), layout="constrained")
    parts = [key for key in SHARE_COLOURS if key in summary.columns]
    summary[parts].iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.8,
                                        color=[SHARE_COLOURS[k] for k in parts])
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.axvline(1.0, color="black", linewidth=0.6, linestyle=":")
    ax.set_xlabel("share of the logit (projection over images and classes)")
    ax.set_ylabel("")
    ax.get_legend().remove()
    ax.figure.legend(*ax.get_legend_handles_labels(), fontsize=8, ncols=len(parts),
                     loc="outside lower center", frameon=False)
    return ax.figure


def blockiness_bars(table: pd.DataFrame, limit: float | None = 1.15,
                    ax: plt.Axes | None = None) -> plt.Figure:
    """Grouped bars: each method's blockiness ratio per period (1.0 = no grid).

    Parameters
    ----------
    table : DataFrame
        :func:`chexlib.heatmap_quality.artefacts.blockiness_table` (index: methods).
    limit : float, optional
        Drawn as a dashed line (the series' target for its default composite).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    periods = [c for c in table.columns if c.startswith("period_")]
    table[periods].rename(columns=lambda c: c.replace("period_", "period ")).plot.bar(
        ax=ax, width=0.8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    if limit is not None:
        ax.axhline(limit, color="black", linewidth=0.8, linestyle="--", label=f"{limit}")
    low = min(0.95, float(table[periods].min().min()) - 0.02)
    ax.set_ylim(low, max(float(table[periods].max().max()) + 0.05, (limit or 1.0) + 0.05))
    ax.set_ylabel("blockiness (1 = no grid)")
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=35, labelsize=8)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.legend(fontsize=8, frameon=False)
    return ax.figure
