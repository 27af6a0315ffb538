"""Summaries of a label table: co-occurrence, policy effects, comparisons, example choice.

These feed notebook 01 ("CheXpert data distribution"). All take a DataFrame from
:func:`chexlib.data.read_labels`; the tables are DataFrames indexed by observation in CSV order,
:func:`example_panels` gives the example gallery's images, titles and outlines.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from chexlib.data.images import read_radiograph, resolve_image_path
from chexlib.data.labels import label_distribution
from chexlib.masks import chexlocalize_image_id, load_split_masks
from chexlib.observations import OBSERVATIONS, UNCERTAINTY_POLICIES, apply_uncertainty_policy


def _labels(df: pd.DataFrame) -> np.ndarray:
    return df[list(OBSERVATIONS)].to_numpy(dtype=np.float64)


def cooccurrence(df: pd.DataFrame, policy: str = "zeros") -> pd.DataFrame:
    """Conditional co-occurrence of positive labels, in percent.

    Parameters
    ----------
    df : DataFrame
        Labels from :func:`chexlib.data.read_labels`.
    policy : {"zeros", "ones", "ignore"}
        How uncertain labels count (``ignore`` counts them as not positive).

    Returns
    -------
    DataFrame, shape [14, 14]
        Entry (a, b) is P(b positive | a positive) x 100; NaN where ``a`` has no positives.
    """
    targets, mask = apply_uncertainty_policy(_labels(df), policy)
    positive = (targets * mask).astype(np.float64)
    both = positive.T @ positive  # [14, 14] counts of images positive for a and b
    with np.errstate(invalid="ignore", divide="ignore"):
        conditional = 100.0 * both / np.diag(both)[:, None]
    return pd.DataFrame(conditional, index=list(OBSERVATIONS), columns=list(OBSERVATIONS))


def policy_positive_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Positive rate of each observation under each uncertainty policy, in percent.

    The rate is the share of positive targets among the entries that count in the loss, so
    ``ignore`` divides by the certain entries only. A class with no positives gets 0; NaN (no
    warning) where no entry counts, i.e. every label of the class is uncertain under ``ignore``.

    Returns
    -------
    DataFrame
        Indexed by observation, one column per policy (``zeros``, ``ones``, ``ignore``).
    """
    values = _labels(df)
    out = {}
    for policy in UNCERTAINTY_POLICIES:
        targets, mask = apply_uncertainty_policy(values, policy)
        counted = mask.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[policy] = 100.0 * (targets * mask).sum(axis=0) / counted
    return pd.DataFrame(out, index=list(OBSERVATIONS))


def compare_distributions(tables: dict[str, pd.DataFrame], column: str = "positive_%") -> pd.DataFrame:
    """Put one column of several :func:`label_distribution` tables side by side.

    Parameters
    ----------
    tables : dict of name -> DataFrame
        E.g. ``{"CheXpert train.csv": ..., "phantom train.csv": ...}``.
    column : str
        Which column to compare (default the positive percentage).
    """
    return pd.DataFrame({name: t[column] for name, t in tables.items()})


def distribution_table(df: pd.DataFrame) -> pd.DataFrame:
    """The study's "CheXpert data distribution" table: counts with percentages, as text cells.

    Returns
    -------
    DataFrame
        Indexed by observation, columns ``positive``, ``negative``, ``uncertain``, ``blank``,
        each cell ``"count (pct%)"``.
    """
    dist = label_distribution(df)
    cols = ("positive", "negative", "uncertain", "blank")
    return pd.DataFrame(
        {c: [f"{n:,} ({p:.1f}%)" for n, p in zip(dist[c], dist[f"{c}_%"])] for c in cols},
        index=dist.index,
    )


def pick_examples(df: pd.DataFrame, classes: list[str], n: int, seed: int = 0) -> list[int]:
    """Choose ``n`` rows that show the given observations, round-robin over the classes.

    Each pick is an image positive for the next class in turn (not picked before); when a class
    has no positives left, the turn passes on; remaining places go to random other rows.

    Returns
    -------
    list of int
        Row positions into ``df``, at most ``n`` (fewer only when ``df`` has fewer rows).
    """
    rng = np.random.default_rng(seed)
    values = _labels(df)
    chosen: list[int] = []
    pools = {c: list(rng.permutation(np.flatnonzero(values[:, OBSERVATIONS.index(c)] == 1.0)))
             for c in classes}
    while len(chosen) < min(n, len(df)) and any(pools.values()):
        for c in classes:
            while pools[c] and pools[c][0] in chosen:
                pools[c].pop(0)
            if pools[c] and len(chosen) < n:
                chosen.append(int(pools[c].pop(0)))
    rest = [int(i) for i in rng.permutation(len(df)) if i not in chosen]
    return chosen + rest[: max(0, min(n, len(df)) - len(chosen))]


def example_panels(df: pd.DataFrame, rows: list[int], data_root: str | os.PathLike,
                   split: str = "valid") -> tuple[list[np.ndarray], list[str],
                                                  list[dict[str, np.ndarray]], list[str]]:
    """The radiographs of ``rows`` of ``df`` with a title and their ground-truth outlines.

    Parameters
    ----------
    df : DataFrame
        Labels of ``split`` (e.g. :func:`chexlib.data.read_labels` of ``valid.csv``).
    rows : list of int
        Row positions into ``df`` (e.g. :func:`pick_examples`).
    data_root : path-like
        The data folder (images and ``masks/``).
    split : str
        Whose masks (:func:`chexlib.masks.load_split_masks`) to outline.

    Returns
    -------
    images : list of ndarray
        The radiographs as stored (:func:`chexlib.data.read_radiograph`).
    titles : list of str
        ``"<AP/PA> · <positive observations>"`` (``No Finding`` when there is none).
    outlines : list of dict name -> bool mask
        Each image's finding masks and its shortcut masks (empty when the data has none).
    ids : list of str
        CheXlocalize image ids (:func:`chexlib.masks.chexlocalize_image_id`).
    """
    findings, shortcut = load_split_masks(data_root, split)
    images, titles, outlines, ids = [], [], [], []
    for r in rows:
        path = df["Path"].iloc[r]
        images.append(read_radiograph(resolve_image_path(data_root, path)))
        positives = [c for c in OBSERVATIONS if df[c].iloc[r] == 1.0 and c != "No Finding"]
        titles.append(f"{df['AP/PA'].iloc[r]} · " + (", ".join(positives) or "No Finding"))
        ids.append(chexlocalize_image_id(path))
        outlines.append({**findings.get(ids[-1], {}), **shortcut.get(ids[-1], {})})
    return images, titles, outlines, ids
