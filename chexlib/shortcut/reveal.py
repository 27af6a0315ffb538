"""Which explanation reveals the shortcut: relevance on the confounder against its causal effect.

For every method, an image's share of positive relevance on the confounder's mask and on the
finding's mask (:func:`chexlib.heatmap_quality.localisation.relevance_mass_accuracy`: NaN for a
blank map), and the rank correlation over images between the confounder share and the measured
causal effect (:mod:`chexlib.shortcut.causal`): a method that reveals the shortcut puts more
relevance on the drain where removing the drain changes the prediction more.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from chexlib.errors import MetricInputError
from chexlib.heatmap_quality.localisation import blank_maps, relevance_mass_accuracy

__all__ = ["REVEAL_COLUMNS", "confounder_shares", "reveal_table"]

#: Columns of :func:`reveal_table` (and of ``tables/07_reveal.csv``).
REVEAL_COLUMNS = ("method", "n", "blank_rate", "share_confounder", "n_finding", "share_finding",
                  "spearman_with_effect")


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


def reveal_table(shares: Mapping[str, pd.DataFrame], effects) -> pd.DataFrame:
    """Per method: mean shares and their rank correlation with the causal effect.

    Parameters
    ----------
    shares : mapping method -> DataFrame
        :func:`confounder_shares` of each method, rows in the order of ``effects``.
    effects : array-like [N]
        The causal effect per image, e.g. minus the logit change when the drain is removed (so
        larger = the drain raised the logit more).

    Returns
    -------
    DataFrame
        :data:`REVEAL_COLUMNS`. ``n`` counts the images with a non-blank map (and an effect):
        ``share_confounder`` is their mean and the Spearman correlation (average ranks, scipy's)
        is over them, NaN with fewer than 3 or constant values. ``share_finding`` has another
        denominator, ``n_finding``: the images among them that also carry the finding (a drain
        without pneumothorax has no finding to put relevance on). ``blank_rate`` is over all
        images.
    """
    effect = np.asarray(effects, float)
    rows = []
    for method, table in shares.items():
        if len(table) != len(effect):
            raise MetricInputError(f"{method}: {len(table)} images of shares and {len(effect)} "
                                   "effects; expected one of each per image")
        share = table["share_confounder"].to_numpy(float)
        usable = np.isfinite(share) & np.isfinite(effect)
        rho = np.nan
        if usable.sum() >= 3 and np.ptp(share[usable]) > 0 and np.ptp(effect[usable]) > 0:
            rho = float(stats.spearmanr(share[usable], effect[usable]).statistic)
        finding = table["share_finding"].to_numpy(float)
        rows.append((method, int(usable.sum()), float(table["blank"].mean()),
                     float(np.nanmean(share)) if np.isfinite(share).any() else np.nan,
                     int(np.isfinite(finding).sum()),
                     float(np.nanmean(finding)) if np.isfinite(finding).any() else np.nan, rho))
    return pd.DataFrame(rows, columns=list(REVEAL_COLUMNS))
