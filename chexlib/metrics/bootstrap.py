"""Percentile-bootstrap confidence intervals of per-class AUROC and AUPRC.

Images of one patient are not independent (same anatomy, same devices, often the same finding),
so when patient ids are given the bootstrap resamples PATIENTS with replacement and every image
of a drawn patient comes along; a patient drawn k times counts k times. Without ids it resamples
images.

Vectorised: a batch of resamples is a matrix of integer weights [B, N] (how often each image was
drawn), and :func:`~chexlib.metrics.discrimination.weighted_auroc_auprc` scores all rows at once;
there is no Python loop over resamples.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np

from chexlib.errors import MetricInputError
from chexlib.metrics._inputs import check_labels_probs, group_codes
from chexlib.metrics.discrimination import weighted_auroc_auprc

#: Weight-matrix entries per batch (about 32 MB of float64): bounds memory for large N. The
#: random draws do not depend on the batch size, so the intervals do not either.
BATCH_ELEMENTS = 4_000_000


def bootstrap_ci(y_true, y_prob, groups=None, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, np.ndarray]:
    """Percentile-bootstrap intervals of AUROC and AUPRC per class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    groups : array-like, shape [N], optional
        Patient id of each image. Given: patients are resampled; else images.
    n_boot : int
        Number of resamples (papers use 1,000 to 10,000).
    level : float
        Coverage of the interval, in (0, 1); 0.95 gives the 2.5th and 97.5th percentiles.
    seed : int
        Seed of the random generator: the same seed and data give the same intervals.

    Returns
    -------
    dict of str -> ndarray, each shape [C]
        ``auroc_low``, ``auroc_high``, ``auprc_low``, ``auprc_high`` (NaN for a class that never
        had both labels) and ``n_valid``: the number of resamples in which the class had both
        labels. Resamples where a class has a single label value are skipped for that class only.
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    _check_options(n_boot, level, seed)
    aurocs, auprcs = bootstrap_samples(y_true, y_prob, groups, n_boot, seed)
    low, high = 50 * (1 - level), 50 * (1 + level)
    result = {}
    for name, samples in (("auroc", aurocs), ("auprc", auprcs)):
        result[f"{name}_low"], result[f"{name}_high"] = _percentiles(samples, low, high)
    result["n_valid"] = (~np.isnan(aurocs)).sum(axis=1)
    return result


def bootstrap_samples(y_true, y_prob, groups=None, n_boot: int = 1000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AUPRC of every class in every resample.

    Parameters and resampling as in :func:`bootstrap_ci`.

    Returns
    -------
    aurocs, auprcs : ndarray float64, shape [C, n_boot]
        NaN where the class had a single label value in that resample.
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    _check_options(n_boot, 0.95, seed)
    n_rows, n_classes = y_true.shape
    codes = np.arange(n_rows) if groups is None else group_codes(groups, n_rows)
    aurocs = np.empty((n_classes, n_boot))
    auprcs = np.empty((n_classes, n_boot))
    rng = np.random.default_rng(seed)
    for first, weights in resample_weights(codes, n_boot, rng):
        batch = slice(first, first + len(weights))
        for c in range(n_classes):
            aurocs[c, batch], auprcs[c, batch] = weighted_auroc_auprc(
                y_true[:, c], y_prob[:, c], weights)
    return aurocs, auprcs


def resample_weights(codes: np.ndarray, n_boot: int,
                     rng: np.random.Generator) -> Iterator[tuple[int, np.ndarray]]:
    """Draw groups with replacement and yield image weights batch by batch.

    Parameters
    ----------
    codes : ndarray int, shape [N]
        Group (patient) of each image, 0..G-1; ``arange(N)`` resamples images.
    n_boot : int
        Total number of resamples.
    rng : numpy Generator
        Consumed in resample order, so batching does not change the draws.

    Yields
    ------
    first : int
        Index of the batch's first resample.
    weights : ndarray float64, shape [b, N]
        Times each image's group was drawn; every resample draws G groups.
    """
    n_groups = int(codes.max()) + 1
    batch = max(1, BATCH_ELEMENTS // max(len(codes), n_groups))
    for first in range(0, n_boot, batch):
        size = min(batch, n_boot - first)
        draws = rng.integers(0, n_groups, size=(size, n_groups))
        # Offset each resample's draws into its own range so one bincount counts them all.
        flat = (draws + n_groups * np.arange(size)[:, None]).ravel()
        counts = np.bincount(flat, minlength=size * n_groups).reshape(size, n_groups)
        yield first, counts[:, codes].astype(np.float64)


def _percentiles(samples: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentiles per row [C, B] over the non-NaN entries; NaN for a row without any."""
    lows = np.full(len(samples), np.nan)
    highs = np.full(len(samples), np.nan)
    for c, row in enumerate(samples):
        valid = row[~np.isnan(row)]
        if valid.size:
            lows[c], highs[c] = np.percentile(valid, [low, high])
    return lows, highs


def _check_options(n_boot, level, seed) -> None:
    """Raise :class:`MetricInputError` for a non-positive n_boot, a level outside (0, 1) or a
    seed that is not a non-negative integer."""
    if not isinstance(n_boot, numbers.Integral) or isinstance(n_boot, bool) or n_boot < 1:
        raise MetricInputError(f"n_boot must be a positive integer: got {n_boot!r}")
    if not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise MetricInputError(f"level must be a number in (0, 1), e.g. 0.95: got {level!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise MetricInputError(f"seed must be a non-negative integer: got {seed!r}")
