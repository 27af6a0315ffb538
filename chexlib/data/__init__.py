"""CheXpert-format data: labels, their distribution, patient splits, the Dataset and image cache.

``chexlib.data.labels``   read_labels, label_distribution, chexpert_train_labels
``chexlib.data.splits``   patient-level train / internal-validation split of train.csv
``chexlib.data.cache``    decode-and-resize-once image cache (uint8 memory map)
``chexlib.data.dataset``  the torch Dataset over a CheXpert-format folder
"""

from chexlib.data.labels import (
    PATH_PATTERN,
    chexpert_train_labels,
    chexpert_train_labels_path,
    label_distribution,
    patient_ids,
    read_labels,
    study_ids,
)

__all__ = [
    "PATH_PATTERN",
    "chexpert_train_labels",
    "chexpert_train_labels_path",
    "label_distribution",
    "patient_ids",
    "read_labels",
    "study_ids",
]
