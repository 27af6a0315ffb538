"""Resizing a ground-truth mask into another frame, such as the model's square input.

:func:`resize_mask` keeps a target pixel when at least half of the source area it covers is
inside the mask, so a mask drawn on the full image lines up with a heatmap of the model's input.
"""

from __future__ import annotations

import numpy as np

from chexlib.errors import MaskFormatError

__all__ = ["resize_mask"]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask [H, W] to ``shape`` (the model's square input frame).

    A target pixel is inside when at least half of the source area it covers is inside
    (area interpolation of the 0/1 mask, thresholded at 0.5), so thin structures are neither
    lost nor inflated by the change of resolution.
    """
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise MaskFormatError(f"resize_mask: expected a 2-D mask, got shape {mask.shape}")
    resized = Image.fromarray(mask.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(resized) >= 0.5
