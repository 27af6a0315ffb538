"""Sorting scores into blocks of tied values: the common step of AUROC, AUPRC and thresholds.

Every ranking metric here works on the distinct score values in descending order ("blocks"):
images with the same score fall into one block and are counted together, which is how
scikit-learn treats ties (a tied positive/negative pair counts one half in the AUROC; a threshold
never splits tied images).
"""

from __future__ import annotations

import numpy as np


def descending_blocks(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order scores from high to low and find where each block of tied values starts.

    Parameters
    ----------
    scores : ndarray, shape [N]

    Returns
    -------
    order : ndarray int, shape [N]
        Indices that sort ``scores`` in descending order.
    starts : ndarray int, shape [K]
        Position in the sorted order where each of the K distinct values begins.
    values : ndarray, shape [K]
        The distinct score values, descending.
    """
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    starts = np.concatenate(([0], np.flatnonzero(ranked[1:] != ranked[:-1]) + 1))
    return order, starts, ranked[starts]


def block_label_sums(labels: np.ndarray, weights: np.ndarray, order: np.ndarray,
                     starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted number of positives and negatives in each block of tied scores.

    Parameters
    ----------
    labels : ndarray, shape [N]
        0/1 labels.
    weights : ndarray, shape [B, N]
        One row of image weights per resample (bootstrap multiplicities; ones for the plain
        metric).
    order, starts : ndarray
        From :func:`descending_blocks`.

    Returns
    -------
    positives, negatives : ndarray float64, shape [B, K]
        Per resample and block, the summed weight of positive and of negative images.
    """
    ranked_weights = weights[:, order]
    positive_weights = ranked_weights * labels[order]
    positives = np.add.reduceat(positive_weights, starts, axis=1)
    negatives = np.add.reduceat(ranked_weights - positive_weights, starts, axis=1)
    return positives, negatives
