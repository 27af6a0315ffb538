"""Ground-truth masks: COCO run-length encoding and CheXlocalize's JSON files.

``chexlib.masks.rle``           COCO RLE in numpy: :func:`rle_encode`, :func:`rle_decode`
``chexlib.masks.chexlocalize``  CheXlocalize's files: image ids, reading, writing, a split's masks
``chexlib.masks.resize``        a mask resized into another frame (the model's input)

Their public names are importable from here.
"""

from chexlib.masks.chexlocalize import (
    chexlocalize_image_id,
    load_mask_file,
    load_split_masks,
    read_chexlocalize,
    write_chexlocalize,
)
from chexlib.masks.resize import resize_mask
from chexlib.masks.rle import rle_decode, rle_encode

__all__ = [
    "chexlocalize_image_id",
    "load_mask_file",
    "load_split_masks",
    "read_chexlocalize",
    "resize_mask",
    "rle_decode",
    "rle_encode",
    "write_chexlocalize",
]
