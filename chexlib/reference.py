"""Numbers published elsewhere that the notebooks show beside chexlib's own, clearly labelled.

Nothing here is computed by chexlib: these are the original study's and the CheXpert paper's
reported results on the real CheXpert validation set (234 images), for comparison only.
"""

from __future__ import annotations

import math

#: The original study's per-class validation AUROC (U-Zeros, official valid.csv). Fracture had
#: no positives there (undefined); Pleural Other had almost none (1.00 is not meaningful).
STUDY_AUROC: dict[str, float] = {
    "No Finding": 0.79,
    "Enlarged Cardiomediastinum": 0.60,
    "Cardiomegaly": 0.80,
    "Lung Opacity": 0.87,
    "Lung Lesion": 0.53,
    "Edema": 0.87,
    "Consolidation": 0.51,
    "Pneumonia": 0.50,
    "Atelectasis": 0.53,
    "Pneumothorax": 0.68,
    "Pleural Effusion": 0.91,
    "Pleural Other": 1.00,
    "Fracture": math.nan,
    "Support Devices": 0.89,
}

#: The study's support-weighted means over 13 classes (Fracture dropped).
STUDY_WEIGHTED_MEAN_AUROC = 0.76
STUDY_WEIGHTED_MEAN_AUPRC = 0.65

#: Best validation AUROC per competition class in the CheXpert paper (Irvin et al. 2019),
#: with the uncertainty policy that achieved it.
CHEXPERT_PAPER_BEST_AUROC: dict[str, tuple[float, str]] = {
    "Atelectasis": (0.858, "U-Ones"),
    "Cardiomegaly": (0.854, "U-MultiClass"),
    "Consolidation": (0.939, "U-SelfTrained"),
    "Edema": (0.941, "U-Ones"),
    "Pleural Effusion": (0.936, "U-MultiClass"),
}
