"""Which images carry the finding and the confounder: the four subgroups of the shortcut lab.

A model that learned the drain instead of the air scores pneumothorax *with* a drain well and
pneumothorax *without* one (the untreated cases that matter) poorly, and calls drains without
pneumothorax positive: the hidden strata of Oakden-Rayner et al. (2020).
"""

from __future__ import annotations

import numpy as np

from chexlib.errors import MetricInputError

__all__ = ["SUBGROUPS", "drain_subgroups"]

#: The subgroups, in report order.
SUBGROUPS: tuple[str, ...] = ("finding with drain", "finding without drain",
                              "drain without finding", "neither")


def drain_subgroups(finding, drain) -> np.ndarray:
    """The subgroup of each image from its finding label and its drain flag.

    Parameters
    ----------
    finding, drain : array-like of 0/1 or bool, shape [N]
        Whether the image's finding (e.g. Pneumothorax) is present; whether it carries a drain.

    Returns
    -------
    ndarray of str, shape [N]
        One of :data:`SUBGROUPS` per image.
    """
    finding, drain = _flags(finding, "finding"), _flags(drain, "drain")
    if finding.shape != drain.shape:
        raise MetricInputError(f"finding has {finding.size} images and drain {drain.size}; "
                               "expected one flag of each per image")
    index = np.where(finding, np.where(drain, 0, 1), np.where(drain, 2, 3))
    return np.asarray(SUBGROUPS, dtype=object)[index].astype(str)


def _flags(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise MetricInputError(f"{name} has shape {array.shape}; expected one flag per image")
    if array.dtype != bool and not np.isin(array, (0, 1)).all():
        raise MetricInputError(f"{name} holds values other than 0 and 1; expected binary flags")
    return array.astype(bool)
