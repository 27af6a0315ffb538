"""Figures of the data: label distributions, co-occurrence, demographics, galleries."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

LABEL_COLOURS = {"positive": "#c0392b", "negative": "#2e86c1", "uncertain": "#f5b041",
                 "blank": "#d5d8dc"}
OUTLINE_COLOURS = plt.get_cmap("tab10").colors


def label_distribution_bars(tables: dict[str, pd.DataFrame]) -> plt.Figure:
    """Stacked horizontal bars of positive/negative/uncertain/blank per observation.

    Parameters
    ----------
    tables : dict of title -> DataFrame
        :func:`chexlib.data.label_distribution` tables, one panel each (e.g. real and phantom).
    """
    fig, axes = plt.subplots(1, len(tables), figsize=(6.5 * len(tables), 5.5), sharey=True,
                             squeeze=False)
    for ax, (title, dist) in zip(axes[0], tables.items()):
        left = np.zeros(len(dist))
        for kind, colour in LABEL_COLOURS.items():
            ax.barh(dist.index, dist[f"{kind}_%"], left=left, color=colour, label=kind)
            left += dist[f"{kind}_%"].to_numpy()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of images")
        ax.set_title(f"{title} (n = {int(dist.iloc[0][list(LABEL_COLOURS)].sum()):,})")
        ax.invert_yaxis()
    axes[0, -1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def cooccurrence_heatmap(matrix: pd.DataFrame, title: str = "") -> plt.Figure:
    """Heatmap of P(column positive | row positive) in percent."""
    fig, ax = plt.subplots(figsize=(8.5, 7))
    sns.heatmap(matrix, ax=ax, cmap="rocket_r", vmin=0, vmax=100, annot=True, fmt=".0f",
                annot_kws={"fontsize": 6}, cbar_kws={"label": "P(column | row) %"})
    ax.set_title(title or "Label co-occurrence")
    fig.tight_layout()
    return fig


def demographics(df: pd.DataFrame, title: str = "") -> plt.Figure:
    """View (AP/PA), sex and age of the images in a label table."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    view = df["AP/PA"].replace("", "lateral")
    sns.countplot(x=view, ax=axes[0], order=sorted(view.unique()), color="#5d6d7e")
    axes[0].set_title("View")
    sns.countplot(x=df["Sex"], ax=axes[1], order=sorted(df["Sex"].unique()), color="#5d6d7e")
    axes[1].set_title("Sex")
    sns.histplot(x=df["Age"], hue=view, ax=axes[2], bins=20, element="step", stat="percent",
                 common_norm=False)
    axes[2].set_title("Age by view")
    for ax in axes[:2]:
        ax.set_xlabel("")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def policy_rates(rates: pd.DataFrame, title: str = "") -> plt.Figure:
    """Grouped bars: positive rate per observation under each uncertainty policy."""
    long = rates.reset_index(names="observation").melt(
        id_vars="observation", var_name="policy", value_name="positive %")
    fig, ax = plt.subplots(figsize=(8, 5.5))
    sns.barplot(data=long, y="observation", x="positive %", hue="policy", ax=ax)
    ax.set_title(title or "Positive rate under each uncertainty policy")
    ax.set_ylabel("")
    fig.tight_layout()
    return fig


def gallery(images: list[np.ndarray], titles: list[str],
            outlines: list[dict[str, np.ndarray]] | None = None, columns: int = 4) -> plt.Figure:
    """Radiographs in a grid, with the outline of each ground-truth mask.

    Parameters
    ----------
    images : list of ndarray [H, W]
        Grayscale images (uint8 or float).
    titles : list of str
        One per image.
    outlines : list of dict, optional
        Per image, observation name -> boolean mask [H, W]; drawn as coloured contours with a
        legend entry per observation.
    """
    rows = int(np.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.8 * rows), squeeze=False)
    colour_of: dict[str, tuple] = {}
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        ax.imshow(images[k], cmap="gray")
        ax.set_title(textwrap.fill(titles[k], 38), fontsize=8)
        for name, mask in (outlines[k] if outlines else {}).items():
            colour = colour_of.setdefault(name, OUTLINE_COLOURS[len(colour_of) % 10])
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
    handles = [plt.Line2D([], [], color=c, label=n) for n, c in colour_of.items()]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.05 if handles else 0, 1, 1))
    return fig
