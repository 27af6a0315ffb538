"""CheXpert-format data: labels, their distribution, patient splits, the Dataset and image cache.

``chexlib.data.labels``   read_labels, label_distribution, chexpert_train_labels
``chexlib.data.splits``   patient-level train / internal-validation split of train.csv
``chexlib.data.images``   image path resolution and decoding (grayscale, square resize)
``chexlib.data.cache``    decode-and-resize-once image cache (uint8 memory map)
``chexlib.data.dataset``  the torch Dataset over a CheXpert-format folder
"""

from chexlib.data.cache import CACHE_VERSION, ImageCache, cache_key
from chexlib.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheXpertDataset,
    denormalize,
    normalize,
)
from chexlib.data.images import load_grayscale, read_radiograph, resolve_image_path
from chexlib.data.labels import (
    PATH_PATTERN,
    chexpert_train_labels,
    chexpert_train_labels_path,
    label_distribution,
    patient_ids,
    read_labels,
    study_ids,
)
from chexlib.data.splits import patient_split, split_frame

__all__ = [
    "CACHE_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PATH_PATTERN",
    "CheXpertDataset",
    "ImageCache",
    "cache_key",
    "chexpert_train_labels",
    "chexpert_train_labels_path",
    "denormalize",
    "label_distribution",
    "load_grayscale",
    "normalize",
    "patient_ids",
    "patient_split",
    "read_labels",
    "read_radiograph",
    "resolve_image_path",
    "split_frame",
    "study_ids",
]
