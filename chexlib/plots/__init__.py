"""Figures shared by the notebooks. Each function returns a matplotlib Figure and shows nothing.

``chexlib.plots.data``        label distributions, co-occurrence, demographics, galleries (notebook 01)
``chexlib.plots.training``    learning curves (notebook 02)
``chexlib.plots.metrics``     plots of chexlib.metrics: ROC/PR curves, calibration, outcomes (notebook 03)
``chexlib.plots.heatmaps``    signed relevance maps over radiographs: per class, method, image
                              (``overlay`` returns its Axes; ``symmetric_limit`` and
                              ``rgb_heatmap``, from ``chexlib.plots.heatmap_arrays``, arrays)
``chexlib.plots.galleries``   outcome galleries and RGB grids of a run's reported images (04, 05)
``chexlib.plots.heatmap_quality``  plots of chexlib.heatmap_quality: localisation bars,
                              perturbation curves, sanity curves, metric summary (notebook 06)
``chexlib.plots.relevance``   where LRP relevance goes (pixels, biases), grid artefacts (04)
"""

from chexlib.plots.data import (
    cooccurrence_heatmap,
    demographics,
    gallery,
    label_distribution_bars,
    policy_rates,
)
from chexlib.plots.metrics import (
    auroc_comparison,
    outcome_bars,
    reliability_diagram,
    roc_pr_curves,
)
from chexlib.plots.heatmaps import (
    grid_classes,
    grid_images,
    grid_methods,
    overlay,
    rgb_heatmap,
    symmetric_limit,
)
from chexlib.plots.training import learning_curves

__all__ = [
    "auroc_comparison",
    "cooccurrence_heatmap",
    "demographics",
    "gallery",
    "grid_classes",
    "grid_images",
    "grid_methods",
    "label_distribution_bars",
    "learning_curves",
    "outcome_bars",
    "overlay",
    "policy_rates",
    "reliability_diagram",
    "rgb_heatmap",
    "roc_pr_curves",
    "symmetric_limit",
]
