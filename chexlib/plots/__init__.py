"""Figures shared by the notebooks. Each function returns a matplotlib Figure and shows nothing.

``chexlib.plots.data``        label distributions, co-occurrence, demographics, galleries (notebook 01)
``chexlib.plots.training``    learning curves (notebook 02)
``chexlib.plots.evaluation``  ROC/PR curves, calibration, outcome counts (notebook 03)
"""

from chexlib.plots.data import (
    cooccurrence_heatmap,
    demographics,
    gallery,
    label_distribution_bars,
    policy_rates,
)
from chexlib.plots.evaluation import (
    auroc_comparison,
    outcome_bars,
    reliability_diagram,
    roc_pr_curves,
)
from chexlib.plots.training import learning_curves

__all__ = [
    "auroc_comparison",
    "cooccurrence_heatmap",
    "demographics",
    "gallery",
    "label_distribution_bars",
    "learning_curves",
    "outcome_bars",
    "policy_rates",
    "reliability_diagram",
    "roc_pr_curves",
]
