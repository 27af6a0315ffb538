"""Checks shared by every metric: labels, probabilities, class names and patient groups.

Each check raises :class:`chexlib.errors.MetricInputError` (a ``ValueError``) whose message names
the parameter and what was expected, so a notebook user sees at once which argument is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.observations import OBSERVATIONS


def as_matrix(values, name: str) -> np.ndarray:
    """Return ``values`` as a float64 matrix [N, C]; a vector [N] becomes one class [N, 1]."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name} must be numeric, shape [N, C]: {exc}") from None
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise MetricInputError(f"{name} must have shape [N, C]: got {array.ndim} dimensions "
                               f"{array.shape}")
    return array


def check_labels_probs(y_true, y_prob) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label matrix and a probability matrix of the same shape.

    Parameters
    ----------
    y_true : array-like, shape [N, C] (or [N] for one class)
        Binary labels, 0 or 1 (int, float or bool).
    y_prob : array-like, shape [N, C] (or [N])
        Predicted probabilities in [0, 1].

    Returns
    -------
    y_true, y_prob : ndarray float64, shape [N, C]

    Raises
    ------
    MetricInputError
        On a shape mismatch, an empty input, a label other than 0/1 (uncertain -1 and blank NaN
        included: apply an uncertainty policy first) or a probability outside [0, 1] or not finite.
    """
    y_true = as_matrix(y_true, "y_true")
    y_prob = as_matrix(y_prob, "y_prob")
    if y_true.shape != y_prob.shape:
        raise MetricInputError(f"y_true and y_prob must have the same shape [N, C]: got "
                               f"y_true {y_true.shape} and y_prob {y_prob.shape}")
    if y_true.shape[0] == 0:
        raise MetricInputError("y_true and y_prob must have at least one row (N >= 1): got N = 0")
    bad = ~np.isin(y_true, (0.0, 1.0))  # NaN is never in the set, so blanks are caught too
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise MetricInputError(
            f"y_true must contain only 0 and 1: found {y_true[row, col]:g} at row {row}, "
            f"column {col} ({int(bad.sum())} such entries); map uncertain (-1) and blank (NaN) "
            "labels to 0/1 with an uncertainty policy first "
            "(chexlib.observations.apply_uncertainty_policy)")
    bad = ~((y_prob >= 0.0) & (y_prob <= 1.0))  # written this way so NaN counts as bad
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise MetricInputError(
            f"y_prob must be probabilities in [0, 1]: found {y_prob[row, col]:g} at row {row}, "
            f"column {col} ({int(bad.sum())} such entries); apply a sigmoid to logits first")
    return y_true, y_prob


def class_names(classes: Sequence[str] | None, n_classes: int) -> list[str]:
    """Return ``classes`` as a list of C names; by default the CheXpert names when C == 14.

    Raises
    ------
    MetricInputError
        If ``classes`` does not have one name per column.
    """
    if classes is None:
        if n_classes == len(OBSERVATIONS):
            return list(OBSERVATIONS)
        return [f"class {k}" for k in range(n_classes)]
    names = [str(name) for name in classes]
    if len(names) != n_classes:
        raise MetricInputError(f"classes must have one name per column of y_true: expected "
                               f"{n_classes} names, got {len(names)}")
    if len(set(names)) != len(names):
        raise MetricInputError(f"classes must be distinct names: got {names}")
    return names


def group_codes(groups, n_rows: int) -> np.ndarray:
    """Map patient ids [N] to integer codes 0..G-1 (in sorted id order, so runs are repeatable).

    Raises
    ------
    MetricInputError
        If ``groups`` is not one id per row or contains a missing id.
    """
    ids = np.asarray(groups)
    if ids.ndim != 1 or len(ids) != n_rows:
        raise MetricInputError(f"groups must be one patient id per row, shape [{n_rows}]: got "
                               f"shape {ids.shape}")
    if pd.isna(ids).any():
        raise MetricInputError("groups must not contain missing ids (None/NaN): every image "
                               "needs its patient")
    codes, _ = pd.factorize(ids, sort=True)
    return codes.astype(np.intp)


def check_choice(value: str, name: str, allowed: Sequence[str]) -> str:
    """Raise :class:`MetricInputError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise MetricInputError(f"unknown {name} {value!r}: expected one of "
                               f"{', '.join(map(repr, allowed))}")
    return value


def check_thresholds(thresholds, n_classes: int) -> np.ndarray:
    """Validate one finite threshold per class, shape [C] (a scalar applies to every class)."""
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n_classes, float(values))
    if values.shape != (n_classes,):
        raise MetricInputError(f"thresholds must have shape [{n_classes}] (one per class): got "
                               f"{values.shape}")
    if not np.isfinite(values).all():
        raise MetricInputError(f"thresholds must be finite numbers: got {values}")
    return values
