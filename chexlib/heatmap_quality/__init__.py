"""chexlib.heatmap_quality: how good a heatmap is (not the classifier: that is chexlib.metrics), batched over maps and multi-label.

``chexlib.heatmap_quality.localisation``  heatmaps vs ground-truth masks [N, H, W]: pointing game,
                                   relevance mass / rank accuracy, Otsu IoU, their chance level;
                                   blank maps NaN, tied maxima in expectation
``chexlib.heatmap_quality.faithfulness``  region perturbation (MoRF / LeRF / random curves of each
                                   image's own-class logit, batched forward passes) and AOPC
``chexlib.heatmap_quality.sanity``        cascading model-parameter randomisation, Spearman per block
``chexlib.heatmap_quality.artefacts``     grid artefacts: the blockiness ratio of maps at a period
``chexlib.heatmap_quality.compare``       notebook 06's sample, maps and masks per pair,
                                   localisation, faithfulness, sanity, class-sensitivity and
                                   shortcut scores
``chexlib.heatmap_quality.summaries``     summaries with patient-clustered bootstrap intervals,
                                   blank rate and n, per-observation table and verdicts, the
                                   metric summary, computed key insights
``chexlib.heatmap_quality.chexlocalize``  CheXlocalize's protocol (Saporta et al. 2022): Otsu
                                   segmentation at full resolution, hit rate, mIoU, bootstrap CIs
"""

from chexlib.heatmap_quality.faithfulness import FILLS, ORDERS, aopc, region_perturbation
from chexlib.heatmap_quality.localisation import (
    blank_maps,
    chance_level,
    otsu_iou,
    otsu_thresholds,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)

__all__ = ["FILLS", "ORDERS", "aopc", "blank_maps", "chance_level", "otsu_iou", "otsu_thresholds",
           "pointing_game", "region_perturbation", "relevance_mass_accuracy",
           "relevance_rank_accuracy"]
