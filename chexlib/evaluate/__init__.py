"""chexlib.evaluate: how good a heatmap is, batched over maps and multi-label.

``chexlib.evaluate.localisation``  heatmaps vs ground-truth masks [N, H, W]: pointing game,
                                   relevance mass / rank accuracy, Otsu IoU, their chance level
``chexlib.evaluate.faithfulness``  region perturbation (MoRF / LeRF / random curves of each
                                   image's own-class logit, batched forward passes) and AOPC
``chexlib.evaluate.sanity``        cascading model-parameter randomisation, Spearman per block
``chexlib.evaluate.compare``       notebook 06's sample, maps and masks per pair, summaries with
                                   bootstrap intervals, computed key insights
"""

from chexlib.evaluate.faithfulness import FILLS, ORDERS, aopc, region_perturbation
from chexlib.evaluate.localisation import (
    chance_level,
    otsu_iou,
    otsu_thresholds,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

__all__ = ["FILLS", "ORDERS", "aopc", "chance_level", "otsu_iou", "otsu_thresholds",
           "pointing_game", "region_perturbation", "relevance_mass_accuracy",
           "relevance_rank_accuracy"]
