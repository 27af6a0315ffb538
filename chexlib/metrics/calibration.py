"""Whether predicted probabilities match observed frequencies: reliability bins and Brier score.

Bins are equal-width on [0, 1], exactly as ``sklearn.calibration.calibration_curve(
strategy="uniform")``: bin k covers (k/n, (k+1)/n], except that the first also includes 0. Empty
bins are left out, as sklearn does.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.metrics._inputs import check_labels_probs, class_names


def calibration_table(y_true, y_prob, n_bins: int = 10,
                      classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Reliability-diagram points of every class, long format.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    n_bins : int
        Number of equal-width bins on [0, 1].
    classes : list of C str, optional
        Default the 14 CheXpert observations when C == 14.

    Returns
    -------
    DataFrame, one row per (class, non-empty bin)
        ``class``, ``bin`` (0..n_bins-1), ``bin_low``, ``bin_high``, ``mean_predicted``,
        ``observed_rate`` (fraction positive), ``count``. For each class, ``observed_rate`` and
        ``mean_predicted`` equal sklearn's ``calibration_curve`` (prob_true, prob_pred).
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    if not isinstance(n_bins, numbers.Integral) or isinstance(n_bins, bool) or n_bins < 1:
        raise MetricInputError(f"n_bins must be a positive integer: got {n_bins!r}")
    names = class_names(classes, y_true.shape[1])
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Right-closed bins, like sklearn: a probability on an inner edge goes to the lower bin.
    bins = np.searchsorted(edges[1:-1], y_prob, side="left")
    frames = [_class_bins(name, bins[:, c], y_true[:, c], y_prob[:, c], edges)
              for c, name in enumerate(names)]
    return pd.concat(frames, ignore_index=True)


def _class_bins(name: str, bins: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                edges: np.ndarray) -> pd.DataFrame:
    """Rows of one class: the non-empty bins with their mean prediction and positive rate."""
    n_bins = len(edges) - 1
    count = np.bincount(bins, minlength=n_bins)
    filled = count > 0
    return pd.DataFrame({
        "class": name,
        "bin": np.flatnonzero(filled),
        "bin_low": edges[:-1][filled],
        "bin_high": edges[1:][filled],
        "mean_predicted": np.bincount(bins, probs, n_bins)[filled] / count[filled],
        "observed_rate": np.bincount(bins, labels, n_bins)[filled] / count[filled],
        "count": count[filled],
    })


def brier_scores(y_true, y_prob) -> np.ndarray:
    """Mean squared difference between probability and label, per class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].

    Returns
    -------
    ndarray float64, shape [C]
        Equal to ``sklearn.metrics.brier_score_loss`` per column (0 is perfect; always
        predicting the prevalence p scores p (1 - p)). Defined also for a single-valued class.
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    return ((y_prob - y_true) ** 2).mean(axis=0)
