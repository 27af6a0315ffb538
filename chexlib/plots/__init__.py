"""Figures shared by the notebooks. Each function returns a matplotlib Figure and shows nothing.

``chexlib.plots.data``        label distributions, co-occurrence, demographics, galleries (notebook 01)
``chexlib.plots.evaluation``  ROC/PR curves, calibration, outcome counts (notebook 03)
"""

from chexlib.plots.data import (
    cooccurrence_heatmap,
    demographics,
    gallery,
    label_distribution_bars,
    policy_rates,
)

__all__ = [
    "cooccurrence_heatmap",
    "demographics",
    "gallery",
    "label_distribution_bars",
    "policy_rates",
]
