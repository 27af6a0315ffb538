"""The 14 CheXpert observations and the policies for uncertain labels.

Names are spelled exactly as in the CheXpert CSV header and kept in its column order: every
per-class array in chexlib follows this order.

Uncertainty policies (Irvin et al., AAAI 2019):

``zeros``   U-Zeros, uncertain -> 0 (the original study's choice)
``ones``    U-Ones, uncertain -> 1
``ignore``  U-Ignore, uncertain entries are masked out of the loss

Blank ("not mentioned") is negative under every policy.
"""

from __future__ import annotations

import numpy as np

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The five observations of the CheXpert competition, used for the summary AUROC.
COMPETITION_OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

#: Columns before the labels in a CheXpert CSV.
META_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")

UNCERTAINTY_POLICIES: dict[str, str] = {
    "zeros": "U-Zeros: uncertain labels count as negative (the study's choice)",
    "ones": "U-Ones: uncertain labels count as positive",
    "ignore": "U-Ignore: uncertain labels are masked out of the loss",
}

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0


def observation_index(name_or_index: str | int) -> int:
    """Return the column index of an observation given by name or index.

    Raises
    ------
    ValueError
        If the name is not one of :data:`OBSERVATIONS` or the index is out of range; the
        message lists the valid names.
    """
    if isinstance(name_or_index, (int, np.integer)) and not isinstance(name_or_index, bool):
        if 0 <= int(name_or_index) < len(OBSERVATIONS):
            return int(name_or_index)
        raise ValueError(
            f"observation index {name_or_index} is out of range: expected 0..{len(OBSERVATIONS) - 1}"
        )
    if name_or_index in OBSERVATIONS:
        return OBSERVATIONS.index(name_or_index)
    raise ValueError(
        f"unknown observation {name_or_index!r}: expected one of {', '.join(OBSERVATIONS)}"
    )


def apply_uncertainty_policy(labels: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn raw CheXpert labels into training targets and a loss mask.

    Parameters
    ----------
    labels : ndarray, shape [N, 14]
        Raw labels: 1, 0, -1 (uncertain) or NaN (blank).
    policy : {"zeros", "ones", "ignore"}
        The uncertainty policy.

    Returns
    -------
    targets : ndarray float32, shape [N, 14]
        1 for positive, 0 for negative; blanks are 0.
    mask : ndarray float32, shape [N, 14]
        1 where the entry counts in the loss; 0 only for uncertain entries under ``ignore``.
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise ValueError(
            f"unknown uncertainty policy {policy!r}: expected one of {', '.join(UNCERTAINTY_POLICIES)}"
        )
    labels = np.asarray(labels, dtype=np.float64)
    uncertain = labels == UNCERTAIN
    targets = np.where(labels == POSITIVE, 1.0, 0.0)
    if policy == "ones":
        targets[uncertain] = 1.0
    mask = np.ones_like(targets)
    if policy == "ignore":
        mask[uncertain] = 0.0
    return targets.astype(np.float32), mask.astype(np.float32)
