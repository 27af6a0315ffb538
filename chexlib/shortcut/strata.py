"""Hidden stratification: AUROC and the operating point per subgroup, with patient intervals.

Each row compares one subgroup with its counterpart, as Oakden-Rayner et al. (2020) stratify:

=========================  ===========================================  =====================
subgroup                   AUROC of                                     rate at the threshold
=========================  ===========================================  =====================
all                        every positive against every negative        sensitivity
finding with drain         its positives against every negative         sensitivity
finding without drain      its positives against every negative         sensitivity
drain without finding      every positive against its negatives         false-positive rate
=========================  ===========================================  =====================

A model that uses the drain scores the first subgroup better than the second and raises the
false-positive rate of the third. Intervals resample patients (:func:`chexlib.metrics.bootstrap_ci`
and :func:`chexlib.heatmap_quality.summaries.bootstrap_mean` with groups).

The two AUROCs share their negatives, so their intervals are not independent: whether the gap
between them is real is read from the last row, :data:`GAP` (AUROC with a drain minus without),
whose interval comes from one paired patient bootstrap (:func:`auroc_gap`: both AUROCs computed
on the same resampled patients).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.heatmap_quality.summaries import bootstrap_mean
from chexlib.metrics import auroc, bootstrap_ci
from chexlib.metrics._inputs import group_codes
from chexlib.metrics.bootstrap import resample_weights
from chexlib.metrics.discrimination import weighted_auroc_auprc
from chexlib.shortcut.subgroups import SUBGROUPS

__all__ = ["GAP", "STRATA_COLUMNS", "auroc_gap", "strata_table"]

#: The subgroup name of the table's paired-gap row: AUROC with a drain minus without.
GAP = "gap: with drain minus without"

#: Columns of :func:`strata_table` (and of ``tables/07_strata.csv``).
STRATA_COLUMNS = ("observation", "subgroup", "n", "auroc", "auroc_low", "auroc_high",
                  "n_positive", "n_negative", "rate_name", "rate", "rate_low", "rate_high")


def strata_table(labels, scores, subgroups, patients, observation: str,
                 threshold: float | None = None, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """AUROC (and the rate at ``threshold``) of one observation per subgroup.

    Parameters
    ----------
    labels : array-like of 0/1, shape [N]
        The observation's labels.
    scores : array-like, shape [N]
        The model's probabilities (or logits) for it.
    subgroups : array-like of str, shape [N]
        :func:`chexlib.shortcut.subgroups.drain_subgroups` of each image.
    patients : array-like, shape [N]
        Patient of each image (the bootstrap's clusters).
    observation : str
        Its name, for the table.
    threshold : float, optional
        The operating threshold; without it the rate columns are NaN.

    Returns
    -------
    DataFrame
        :data:`STRATA_COLUMNS`, one row per comparison of the table above (a subgroup with no
        image is left out; AUROC is NaN where a comparison lacks one of the labels), then the
        :data:`GAP` row when both finding subgroups are present: ``auroc`` holds the difference
        and ``auroc_low`` / ``auroc_high`` its paired interval (:func:`auroc_gap`), ``n`` the
        images of either comparison; it has no rate.
    """
    y, s = np.asarray(labels, float), np.asarray(scores, float)
    groups, patients = np.asarray(subgroups).astype(str), np.asarray(patients)
    if not (len(y) == len(s) == len(groups) == len(patients)):
        raise MetricInputError(f"labels, scores, subgroups and patients have {len(y)}, {len(s)}, "
                               f"{len(groups)} and {len(patients)} entries; expected one per image")
    unknown = sorted(set(groups) - set(SUBGROUPS))
    if unknown:
        raise MetricInputError(f"unknown subgroup(s) {unknown}; expected {list(SUBGROUPS)}")
    positive, negative = y == 1, y == 0
    comparisons = {
        "all": (positive | negative, positive, "sensitivity"),
        SUBGROUPS[0]: ((positive & (groups == SUBGROUPS[0])) | negative,
                       positive & (groups == SUBGROUPS[0]), "sensitivity"),
        SUBGROUPS[1]: ((positive & (groups == SUBGROUPS[1])) | negative,
                       positive & (groups == SUBGROUPS[1]), "sensitivity"),
        SUBGROUPS[2]: (positive | (negative & (groups == SUBGROUPS[2])),
                       negative & (groups == SUBGROUPS[2]), "false-positive rate"),
    }
    rows = []
    for name, (rows_in, rate_rows, rate_name) in comparisons.items():
        if not rate_rows.any():
            continue
        yy, ss = y[rows_in], s[rows_in]
        value = float(auroc(yy[:, None], _unit(ss)[:, None])[0])
        ci = bootstrap_ci(yy[:, None], _unit(ss)[:, None], groups=patients[rows_in],
                          n_boot=n_boot, seed=seed)
        rate = low = high = np.nan
        if threshold is not None:
            rate, low, high = bootstrap_mean((s[rate_rows] >= threshold).astype(float), n_boot,
                                             seed, groups=patients[rate_rows])
        rows.append((observation, name, int(rows_in.sum()), value, float(ci["auroc_low"][0]),
                     float(ci["auroc_high"][0]), int((positive & rows_in).sum()),
                     int((negative & rows_in).sum()), rate_name, rate, low, high))
    if (positive & (groups == SUBGROUPS[0])).any() and (positive & (groups == SUBGROUPS[1])).any():
        gap, low, high = auroc_gap(y, s, groups, patients, n_boot, seed=seed)
        either = positive | negative
        rows.append((observation, GAP, int(either.sum()), gap, low, high,
                     int(positive.sum()), int(negative.sum()), "", np.nan, np.nan, np.nan))
    return pd.DataFrame(rows, columns=list(STRATA_COLUMNS))


def auroc_gap(labels, scores, subgroups, patients, n_boot: int = 1000, level: float = 0.95,
              seed: int = 0) -> tuple[float, float, float]:
    """AUROC of the positives with a drain minus that of the positives without, paired interval.

    Both AUROCs rank their positives against the same negatives (every image without the
    finding), as the table's two finding rows do. Each bootstrap resample draws patients with
    replacement and computes *both* AUROCs on it, so the interval of the difference accounts for
    the shared negatives and for the patients' several images.

    Parameters
    ----------
    labels, scores, subgroups, patients
        As in :func:`strata_table`.
    n_boot : int
        Resamples; those in which a comparison lacks one of the labels are skipped.
    level : float
        Coverage of the percentile interval.

    Returns
    -------
    gap, low, high : float
        NaN where a comparison has no positive or no negative.
    """
    y, s = np.asarray(labels, float), np.asarray(scores, float)
    groups = np.asarray(subgroups).astype(str)
    positive, negative = y == 1, y == 0
    with_drain = (positive & (groups == SUBGROUPS[0])) | negative
    without = (positive & (groups == SUBGROUPS[1])) | negative
    if not all(y[rows].min() == 0 and y[rows].max() == 1 for rows in (with_drain, without)
               if rows.any()) or not (with_drain.any() and without.any()):
        return np.nan, np.nan, np.nan
    gap = float(auroc(y[with_drain, None], _unit(s[with_drain])[:, None])[0]
                - auroc(y[without, None], _unit(s[without])[:, None])[0])
    codes = group_codes(np.asarray(patients), len(y))
    samples = []
    for _, weights in resample_weights(codes, n_boot, np.random.default_rng(seed)):
        a, _ = weighted_auroc_auprc(y[with_drain], s[with_drain], weights[:, with_drain])
        b, _ = weighted_auroc_auprc(y[without], s[without], weights[:, without])
        samples.append(np.asarray(a) - np.asarray(b))
    values = np.concatenate(samples)
    values = values[np.isfinite(values)]
    if not values.size:
        return gap, np.nan, np.nan
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return gap, float(low), float(high)


def _unit(scores: np.ndarray) -> np.ndarray:
    """Scores mapped into [0, 1] by rank-preserving min-max (the metrics expect probabilities)."""
    if len(scores) and (scores.min() < 0 or scores.max() > 1):
        span = scores.max() - scores.min()
        return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    return scores
