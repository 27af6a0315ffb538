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
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.heatmap_quality.summaries import bootstrap_mean
from chexlib.metrics import auroc, bootstrap_ci
from chexlib.shortcut.subgroups import SUBGROUPS

__all__ = ["STRATA_COLUMNS", "strata_table"]

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
        image is left out; AUROC is NaN where a comparison lacks one of the labels).
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
    return pd.DataFrame(rows, columns=list(STRATA_COLUMNS))


def _unit(scores: np.ndarray) -> np.ndarray:
    """Scores mapped into [0, 1] by rank-preserving min-max (the metrics expect probabilities)."""
    if len(scores) and (scores.min() < 0 or scores.max() > 1):
        span = scores.max() - scores.min()
        return (scores - scores.min()) / span if span > 0 else np.zeros_like(scores)
    return scores
