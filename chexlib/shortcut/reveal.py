"""Which explanation reveals the shortcut: relevance on the confounder against its causal effect.

For every method, an image's share of positive relevance on the confounder's mask and on the
finding's mask (:func:`chexlib.heatmap_quality.localisation.relevance_mass_accuracy`: NaN for a
blank map), and the rank correlation over images between the confounder share and the measured
causal effect (:mod:`chexlib.shortcut.causal`): a method that reveals the shortcut puts more
relevance on the drain where removing the drain changes the prediction more. The correlation
comes with a 95% percentile bootstrap interval over images (each image is one patient's), and with
a Bonferroni-adjusted one for judging the largest of the methods' correlations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from chexlib.errors import MetricInputError
from chexlib.heatmap_quality.localisation import blank_maps, relevance_mass_accuracy
from chexlib.methods import RANDOM

__all__ = ["REVEAL_COLUMNS", "bootstrap_spearman", "confounder_shares", "reveal_table",
           "spearman_interval"]

#: Columns of :func:`reveal_table` (and of ``tables/07_reveal.csv``).
REVEAL_COLUMNS = ("method", "n", "blank_rate", "share_confounder", "n_finding", "share_finding",
                  "spearman_with_effect", "spearman_low", "spearman_high", "spearman_family_low",
                  "spearman_family_high")


def confounder_shares(maps, confounder_masks, finding_masks) -> pd.DataFrame:
    """Per image: the share of positive relevance on the confounder and on the finding.

    Parameters
    ----------
    maps : array [N, H, W]
        One method's maps for the class the confounder acts on.
    confounder_masks, finding_masks : array [N, H, W] of bool
        In the maps' frame; an empty finding mask gives NaN (e.g. a drain without pneumothorax).

    Returns
    -------
    DataFrame
        ``share_confounder``, ``share_finding`` (NaN for a blank map) and ``blank``, per image.
    """
    return pd.DataFrame({
        "share_confounder": relevance_mass_accuracy(maps, confounder_masks),
        "share_finding": relevance_mass_accuracy(maps, finding_masks),
        "blank": blank_maps(maps),
    })


def bootstrap_spearman(x, y, n_boot: int = 4000, seed: int = 0) -> np.ndarray:
    """Spearman's rho of ``n_boot`` resamples of the (x, y) pairs, those with constant x or y
    (no rank correlation) left out; empty with fewer than 3 pairs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.shape != y.shape or x.ndim != 1:
        raise MetricInputError(f"bootstrap_spearman: x has shape {x.shape} and y {y.shape}; "
                               "expected two 1-d arrays of the same length (one value per image)")
    if len(x) < 3:
        return np.empty(0)
    picks = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    rx, ry = stats.rankdata(x[picks], axis=1), stats.rankdata(y[picks], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    norm = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
    usable = norm > 0
    return (rx * ry).sum(axis=1)[usable] / norm[usable]  # Pearson of the ranks = Spearman


def _percentiles(rhos: np.ndarray, n_boot: int, level: float) -> tuple[float, float]:
    if len(rhos) < n_boot / 2:  # most resamples constant: no interval
        return np.nan, np.nan
    tail = 100 * (1 - level) / 2
    return float(np.percentile(rhos, tail)), float(np.percentile(rhos, 100 - tail))


def spearman_interval(x, y, n_boot: int = 4000, seed: int = 0, level: float = 0.95
                      ) -> tuple[float, float]:
    """Percentile bootstrap interval of Spearman's rho, resampling (x, y) pairs.

    Resamples whose x or y are constant have no rank correlation and are left out; NaN, NaN
    when fewer than half of the resamples are usable (e.g. fewer than 3 pairs).
    """
    return _percentiles(bootstrap_spearman(x, y, n_boot, seed), n_boot, level)


def reveal_table(shares: Mapping[str, pd.DataFrame], effects, n_boot: int = 4000,
                 seed: int = 0) -> pd.DataFrame:
    """Per method: mean shares and their rank correlation with the causal effect.

    Parameters
    ----------
    shares : mapping method -> DataFrame
        :func:`confounder_shares` of each method, rows in the order of ``effects``.
    effects : array-like [N]
        The causal effect per image, e.g. minus the logit change when the drain is removed (so
        larger = the drain raised the logit more).
    n_boot, seed : int
        Bootstrap resamples of the images, and their seed.

    Returns
    -------
    DataFrame
        :data:`REVEAL_COLUMNS`. ``n`` counts the images with a non-blank map (and an effect):
        ``share_confounder`` is their mean and the Spearman correlation (average ranks, scipy's)
        is over them, NaN with fewer than 3 or constant values; ``spearman_low`` and
        ``spearman_high`` its 95% bootstrap interval (:func:`spearman_interval`).
        ``spearman_family_low`` and ``spearman_family_high``: the interval from the same
        resamples at level ``1 - 0.05 / m``, m the number of correlations of the methods other
        than the random map (Bonferroni): the interval to judge the *largest* of the m by, which
        was picked for being large. ``share_finding`` has another denominator, ``n_finding``: the
        images among them that also carry the finding (a drain without pneumothorax has no
        finding to put relevance on). ``blank_rate`` is over all images.
    """
    effect = np.asarray(effects, float)
    rows, resampled = [], {}
    for method, table in shares.items():
        if len(table) != len(effect):
            raise MetricInputError(f"{method}: {len(table)} images of shares and {len(effect)} "
                                   "effects; expected one of each per image")
        share = table["share_confounder"].to_numpy(float)
        usable = np.isfinite(share) & np.isfinite(effect)
        rho, low, high = np.nan, np.nan, np.nan
        if usable.sum() >= 3 and np.ptp(share[usable]) > 0 and np.ptp(effect[usable]) > 0:
            rho = float(stats.spearmanr(share[usable], effect[usable]).statistic)
            resampled[method] = bootstrap_spearman(share[usable], effect[usable], n_boot, seed)
            low, high = _percentiles(resampled[method], n_boot, 0.95)
        finding = table["share_finding"].to_numpy(float)
        rows.append([method, int(usable.sum()), float(table["blank"].mean()),
                     float(np.nanmean(share)) if np.isfinite(share).any() else np.nan,
                     int(np.isfinite(finding).sum()),
                     float(np.nanmean(finding)) if np.isfinite(finding).any() else np.nan, rho,
                     low, high])
    family = max(1, sum(method != RANDOM for method in resampled))
    for row in rows:
        rhos = resampled.get(row[0])
        row += (list(_percentiles(rhos, n_boot, 1 - 0.05 / family)) if rhos is not None
                else [np.nan, np.nan])
    return pd.DataFrame(rows, columns=list(REVEAL_COLUMNS))
