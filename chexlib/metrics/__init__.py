"""Evaluation of the 14 sigmoid outputs (notebook 03).

Inputs everywhere: ``y_true`` [N, C] of 0/1, ``y_prob`` [N, C] in [0, 1], classes in CheXpert
column order; ``groups`` [N] patient ids make the bootstrap resample patients.

``chexlib.metrics.discrimination``  per-class AUROC / AUPRC (NaN for a single-valued class)
``chexlib.metrics.bootstrap``       percentile-bootstrap intervals, vectorised over resamples
``chexlib.metrics.table``           the per-class table and its macro / weighted / competition means
``chexlib.metrics.thresholds``      Youden / F1 thresholds (positive iff prob >= threshold), outcomes
``chexlib.metrics.calibration``     reliability bins and Brier scores
"""

from chexlib.metrics.bootstrap import bootstrap_ci, bootstrap_samples
from chexlib.metrics.calibration import brier_scores, calibration_table
from chexlib.metrics.discrimination import auprc, auroc, auroc_auprc, weighted_auroc_auprc
from chexlib.metrics.table import per_class_table, summary
from chexlib.metrics.thresholds import (
    FALLBACK_THRESHOLD,
    choose_thresholds,
    outcome_counts,
    outcomes,
    threshold_table,
)

__all__ = [
    "FALLBACK_THRESHOLD",
    "auprc",
    "auroc",
    "auroc_auprc",
    "bootstrap_ci",
    "bootstrap_samples",
    "brier_scores",
    "calibration_table",
    "choose_thresholds",
    "outcome_counts",
    "outcomes",
    "per_class_table",
    "summary",
    "threshold_table",
    "weighted_auroc_auprc",
]
