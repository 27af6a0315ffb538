"""How well the scores rank positives above negatives: per-class AUROC and AUPRC.

Both metrics are computed from weighted counts per block of tied scores (see ``_ranking``), so one
code path serves the plain metric (all weights 1) and a whole batch of bootstrap resamples at
once (integer weights = how often each image was drawn). The results equal scikit-learn's
``roc_auc_score`` and ``average_precision_score`` (with ``sample_weight`` for the weighted case);
tests check this.

A class whose labels take a single value in the evaluated rows has neither metric: it gets NaN,
without warnings, and the tables flag it.
"""

from __future__ import annotations

import numpy as np

from chexlib.errors import MetricInputError
from chexlib.metrics._inputs import check_labels_probs
from chexlib.metrics._ranking import block_label_sums, descending_blocks


def auroc(y_true, y_prob) -> np.ndarray:
    """Area under the ROC curve per class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].

    Returns
    -------
    ndarray float64, shape [C]
        Equal to ``sklearn.metrics.roc_auc_score`` on each column; NaN where the column has
        only positives or only negatives.
    """
    return auroc_auprc(y_true, y_prob)[0]


def auprc(y_true, y_prob) -> np.ndarray:
    """Area under the precision-recall curve (average precision) per class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].

    Returns
    -------
    ndarray float64, shape [C]
        Equal to ``sklearn.metrics.average_precision_score`` on each column (step-wise sum, no
        interpolation); NaN where the column has only positives or only negatives (with no
        negatives the value would be a trivial 1).
    """
    return auroc_auprc(y_true, y_prob)[1]


def weighted_auroc_auprc(labels, scores, weights) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of one class under many weightings of the images at once.

    Parameters
    ----------
    labels : array-like, shape [N]
        0/1 labels of one class.
    scores : array-like, shape [N]
        Scores of that class (any real values; ties handled as scikit-learn does).
    weights : array-like, shape [B, N] (or [N])
        Non-negative image weights, one row per weighting; bootstrap resamples use the number
        of times each image was drawn. A zero weight removes the image.

    Returns
    -------
    auroc, auprc : ndarray float64, shape [B]
        Row b equals ``roc_auc_score(labels, scores, sample_weight=weights[b])`` and
        ``average_precision_score(...)`` likewise; NaN where row b gives no weight to the
        positives or to the negatives.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if labels.ndim != 1 or scores.shape != labels.shape or weights.shape[1:] != labels.shape:
        raise MetricInputError(f"labels [N], scores [N] and weights [B, N] must agree: got "
                               f"{labels.shape}, {scores.shape} and {weights.shape}")
    if (weights < 0).any():
        raise MetricInputError("weights must be non-negative (counts of draws)")
    order, starts, _ = descending_blocks(scores)
    positives, negatives = block_label_sums(labels, weights, order, starts)
    return _auroc_from_blocks(positives, negatives), _auprc_from_blocks(positives, negatives)


def auroc_auprc(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """:func:`auroc` and :func:`auprc` in one pass (one sort per class).

    Returns
    -------
    aurocs, auprcs : ndarray float64, shape [C] each
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    ones = np.ones((1, y_true.shape[0]))
    pairs = [weighted_auroc_auprc(y_true[:, c], y_prob[:, c], ones)
             for c in range(y_true.shape[1])]
    return (np.array([pair[0][0] for pair in pairs]), np.array([pair[1][0] for pair in pairs]))


def _auroc_from_blocks(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Mann-Whitney form of the AUROC from per-block weights [B, K] (blocks descending).

    Each positive scores 1 per negative strictly below it and 1/2 per tied negative: the area
    under the ROC curve drawn through the blocks (what sklearn's trapezoidal rule gives).
    """
    total_pos = positives.sum(axis=1)
    total_neg = negatives.sum(axis=1)
    negatives_below = total_neg[:, None] - np.cumsum(negatives, axis=1)
    pairs_won = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return _divide_where_defined(pairs_won, total_pos * total_neg, total_pos, total_neg)


def _auprc_from_blocks(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Average precision from per-block weights [B, K] (blocks descending).

    AP = sum over thresholds of (recall gain) x (precision at that threshold); lowering the
    threshold past a block gains recall in proportion to the block's positive weight.
    """
    true_pos = np.cumsum(positives, axis=1)
    predicted_pos = true_pos + np.cumsum(negatives, axis=1)
    # A block carrying no weight in this resample gains no recall, so its precision (0/0) is
    # irrelevant; 0 avoids a warning.
    precision = np.divide(true_pos, predicted_pos, out=np.zeros_like(true_pos),
                          where=predicted_pos > 0)
    total_pos = positives.sum(axis=1)
    return _divide_where_defined((positives * precision).sum(axis=1), total_pos, total_pos,
                                 negatives.sum(axis=1))


def _divide_where_defined(numerator, denominator, total_pos, total_neg) -> np.ndarray:
    """numerator / denominator where both labels carry weight, NaN elsewhere (no warning)."""
    defined = (total_pos > 0) & (total_neg > 0)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=defined)
    return out
