"""Operating thresholds per class, and the TP/FP/FN/TN outcome of every (image, class).

Convention, used everywhere in chexlib: a prediction is POSITIVE IFF ``probability >= threshold``
(inclusive). The candidate thresholds are the distinct predicted probabilities of the class, i.e.
sklearn's ``roc_curve(..., drop_intermediate=False)`` thresholds without the leading ``inf``, so
the chosen threshold is always one of the scores and the image(s) with that score are positive.

Choose thresholds on a validation split that is NOT the split you report: a threshold tuned on
the reported images makes their sensitivity and specificity look better than they are.

Methods
-------
``youden``  maximise Youden's J = sensitivity + specificity - 1 = TPR - FPR
``f1``      maximise F1 = 2 TP / (2 TP + FP + FN)

Ties are broken towards the HIGHEST threshold (fewest positive predictions). The criterion is
computed from integer counts with a single division, so equal values compare equal exactly.

A class with a single label value has no meaningful threshold: it gets the documented fallback
:data:`FALLBACK_THRESHOLD` (0.5) and ``fallback=True`` in :func:`threshold_table`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.metrics._inputs import (
    check_choice,
    check_labels_probs,
    check_thresholds,
    class_names,
)
from chexlib.metrics._ranking import block_label_sums, descending_blocks

METHODS: tuple[str, ...] = ("youden", "f1")
FALLBACK_THRESHOLD = 0.5
OUTCOMES: tuple[str, ...] = ("TP", "FP", "FN", "TN")


def choose_thresholds(y_true, y_prob, method: str = "youden") -> np.ndarray:
    """One operating threshold per class; 0.5 where the class has a single label value.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1, of the split the thresholds are tuned on.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    method : {"youden", "f1"}

    Returns
    -------
    ndarray float64, shape [C]
        Predict positive iff ``y_prob >= threshold``. :func:`threshold_table` also says which
        classes fell back to 0.5.
    """
    return threshold_table(y_true, y_prob, method)["threshold"].to_numpy()


def threshold_table(y_true, y_prob, method: str = "youden",
                    classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Chosen thresholds per class with the criterion they reach and a fallback flag.

    Parameters
    ----------
    y_true, y_prob, method
        As in :func:`choose_thresholds`.
    classes : list of C str, optional
        Row names; default the 14 CheXpert observations when C == 14.

    Returns
    -------
    DataFrame indexed by class
        ``threshold`` (float), ``method`` (str), ``fallback`` (bool: single label value, so
        threshold = 0.5), ``criterion`` (J or F1 reached on these data, NaN on fallback),
        ``sensitivity`` and ``specificity`` at the threshold (NaN where undefined).
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    check_choice(method, "method", METHODS)
    names = class_names(classes, y_true.shape[1])
    rows = [_best_threshold(y_true[:, c], y_prob[:, c], method) for c in range(len(names))]
    table = pd.DataFrame(rows, index=pd.Index(names, name="class"),
                         columns=["threshold", "criterion"])
    table.insert(1, "method", method)
    table.insert(2, "fallback", table["threshold"].isna())
    table["threshold"] = table["threshold"].fillna(FALLBACK_THRESHOLD)
    predicted = y_prob >= table["threshold"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN for a class without positives
        table["sensitivity"] = (predicted & (y_true == 1)).sum(0) / (y_true == 1).sum(0)
        table["specificity"] = (~predicted & (y_true == 0)).sum(0) / (y_true == 0).sum(0)
    return table


def _best_threshold(labels: np.ndarray, scores: np.ndarray, method: str) -> tuple[float, float]:
    """(threshold, criterion) maximising the method's criterion; (NaN, NaN) for one label."""
    order, starts, values = descending_blocks(scores)
    positives, negatives = block_label_sums(labels, np.ones((1, len(labels))), order, starts)
    # Lowering the threshold to block k's score predicts every image down to that block.
    true_pos, false_pos = np.cumsum(positives[0]), np.cumsum(negatives[0])
    n_pos, n_neg = true_pos[-1], false_pos[-1]
    if n_pos == 0 or n_neg == 0:
        return np.nan, np.nan
    if method == "youden":
        criterion = (true_pos * n_neg - false_pos * n_pos) / (n_pos * n_neg)
    else:
        criterion = 2 * true_pos / (true_pos + false_pos + n_pos)
    best = int(np.argmax(criterion))  # first maximum = highest threshold among ties
    return float(values[best]), float(criterion[best])


def outcomes(y_true, y_prob, thresholds) -> np.ndarray:
    """TP / FP / FN / TN of every image and class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    thresholds : array-like, shape [C] (or a scalar for all classes)
        Positive prediction iff ``y_prob >= threshold``.

    Returns
    -------
    ndarray of str, shape [N, C]
        Each entry one of "TP", "FP", "FN", "TN".
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    thresholds = check_thresholds(thresholds, y_true.shape[1])
    predicted = (y_prob >= thresholds[None, :]).astype(np.intp)
    # Index 2 * label + prediction: (0,0) TN, (0,1) FP, (1,0) FN, (1,1) TP.
    lookup = np.array(["TN", "FP", "FN", "TP"])
    return lookup[2 * y_true.astype(np.intp) + predicted]


def outcome_counts(outcomes, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Count TP / FP / FN / TN per class.

    Parameters
    ----------
    outcomes : array-like of str, shape [N, C]
        From :func:`outcomes`.
    classes : list of C str, optional
        Row names; default the 14 CheXpert observations when C == 14.

    Returns
    -------
    DataFrame [C x 4] of int, indexed by class, columns TP, FP, FN, TN.
    """
    values = np.asarray(outcomes, dtype=str)
    if values.ndim != 2:
        raise MetricInputError(f"outcomes must have shape [N, C]: got {values.shape}")
    unknown = ~np.isin(values, OUTCOMES)
    if unknown.any():
        raise MetricInputError(f"outcomes must be one of {', '.join(OUTCOMES)}: found "
                               f"{values[unknown][0]!r}")
    names = class_names(classes, values.shape[1])
    counts = {kind: (values == kind).sum(axis=0) for kind in OUTCOMES}
    return pd.DataFrame(counts, index=pd.Index(names, name="class"))
