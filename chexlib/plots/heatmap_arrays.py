"""Heatmaps as arrays: the symmetric colour scale, colour maps, RGB rendering, input preparation.

The array side of :mod:`chexlib.plots.heatmaps` (no figures here), shared with anything that
renders maps without matplotlib axes (an RGB image for a widget, a PNG).

Signed maps use a diverging colour map centred on zero with symmetric limits
``[-limit, +limit]``, so that 0 always has the centre colour. Colour maps are zennit's palettes
(``"bwr"``, ``"coldnhot"``, ``"seismic"``, ... as in ``zennit.image``) or any matplotlib name.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import Colormap, ListedColormap
from zennit.image import CMAPS as ZENNIT_CMAPS
from zennit.image import palette as zennit_palette

from chexlib.data.dataset import denormalize
from chexlib.errors import ParameterError

# --------------------------------------------------------------------------------------------
# Colour scale
# --------------------------------------------------------------------------------------------

def as_numpy(x) -> np.ndarray:
    """An ndarray from an ndarray, a Tensor (detached, on the CPU) or anything array-like."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def symmetric_limit(maps, mode: str = "per_map", percentile: float = 99.5) -> np.ndarray:
    """Half-range of the symmetric colour scale ``[-limit, +limit]`` of signed maps.

    A robust maximum (a high percentile of ``|value|``) rather than the plain maximum, so one
    extreme pixel does not wash out the rest of the map.

    Parameters
    ----------
    maps : ndarray or Tensor, shape [H, W] or [K, H, W]
        Signed maps, e.g. the K classes of one image.
    mode : {"per_map", "shared"}
        ``"per_map"``: each map its own ``percentile`` of ``|value|``. ``"shared"``: one limit for
        all K maps, the largest of the per-map limits, so the class with the strongest relevance
        uses the full colour range and weaker classes look weaker (the dominant class stands out).
    percentile : float in (0, 100]
        Percentile of ``|value|`` taken as the limit.

    Returns
    -------
    ndarray float64, shape [] for one map or [K]
        Positive limits. A map whose percentile is 0 (a sparse map) falls back to its maximum
        ``|value|``; an all-zero map gets 1.0, so zero still renders as the centre colour.
    """
    x = as_numpy(maps).astype(np.float64)
    if x.ndim not in (2, 3):
        raise ParameterError(f"symmetric_limit: maps must be [H, W] or [K, H, W], got {x.shape}")
    if mode not in ("per_map", "shared"):
        raise ParameterError(f"symmetric_limit: mode must be 'per_map' or 'shared', got {mode!r}")
    if not 0 < percentile <= 100:
        raise ParameterError(f"symmetric_limit: percentile must be in (0, 100], got {percentile}")
    if not np.isfinite(x).all():
        raise ParameterError("symmetric_limit: maps contain NaN or infinite values")
    flat = np.abs(x.reshape(-1, x.shape[-2] * x.shape[-1]))
    limits = np.percentile(flat, percentile, axis=1)
    limits = np.where(limits > 0, limits, flat.max(axis=1))  # sparse maps: use the maximum
    limits = np.where(limits > 0, limits, 1.0)  # all-zero maps: any positive range will do
    if mode == "shared":
        limits = np.full_like(limits, limits.max())
    return limits[0] if x.ndim == 2 else limits


def colormap(cmap: str | Colormap = "bwr") -> Colormap:
    """A matplotlib colour map from a zennit palette name, a matplotlib name or a Colormap.

    zennit's names win where both libraries know one (``"bwr"``, ``"seismic"``), so figures and
    :func:`rgb_heatmap` use the same colours.
    """
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in ZENNIT_CMAPS:
        return ListedColormap(zennit_palette(cmap) / 255.0, name=cmap)
    try:
        return plt.get_cmap(cmap)
    except ValueError:
        raise ParameterError(
            f"cmap {cmap!r} is neither a zennit palette ({', '.join(ZENNIT_CMAPS)}) "
            "nor a matplotlib colour map") from None


def limit_or_default(heatmap: np.ndarray, limit) -> float:
    if limit is None:
        return float(symmetric_limit(heatmap))
    limit = float(limit)
    if not (np.isfinite(limit) and limit > 0):
        raise ParameterError(f"limit must be a positive finite number, got {limit}")
    return limit


def rgb_heatmap(heatmap, limit: float | None = None,
                cmap: str | Colormap = "coldnhot") -> np.ndarray:
    """Render a signed map as an RGB image, 0 at the centre colour of ``cmap``.

    Parameters
    ----------
    heatmap : ndarray or Tensor, shape [H, W]
    limit : float, optional
        Half-range: ``-limit`` gets the first colour, ``+limit`` the last, values beyond are
        clipped. Default: :func:`symmetric_limit` of the map.
    cmap : str or Colormap
        ``"coldnhot"`` (cyan-blue < black < red-yellow-white) or ``"bwr"`` (blue < white < red),
        any zennit palette or matplotlib colour map.

    Returns
    -------
    ndarray uint8, shape [H, W, 3]
    """
    h = heatmap_2d(heatmap)
    limit = limit_or_default(h, limit)
    # 256 palette entries like zennit.image.imgify; -limit -> 0, 0 -> 128, +limit -> 255.
    index = np.rint((np.clip(h / limit, -1.0, 1.0) + 1.0) * 127.5).astype(np.int64)
    table = colormap(cmap)(np.linspace(0.0, 1.0, 256))[:, :3]
    return np.rint(table[index] * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def heatmap_2d(heatmap) -> np.ndarray:
    h = as_numpy(heatmap).astype(np.float32)
    if h.ndim == 3 and h.shape[0] == 1:
        h = h[0]
    if h.ndim != 2:
        raise ParameterError(f"heatmap must be [H, W], got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ParameterError("heatmap contains NaN or infinite values")
    return h


def grayscale(image) -> np.ndarray:
    """The radiograph as float32 [H, W] in [0, 1], for display.

    Parameters
    ----------
    image : ndarray or Tensor
        [H, W] uint8 or float in [0, 1]; or [3, H, W] ImageNet-normalised (as the dataset
        returns it, undone with :func:`chexlib.data.denormalize`); or [1, H, W].
    """
    x = as_numpy(image)
    if x.ndim == 3 and x.shape[0] == 3:
        return denormalize(x)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ParameterError(
            f"image must be [H, W] grayscale or a normalised [3, H, W] tensor, got {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    x = x.astype(np.float32)
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ParameterError(
            f"image [H, W] as float must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]; "
            "pass a normalised image as [3, H, W]")
    return x


def resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a [h, w] map to ``size`` = (H, W) (as Grad-CAM upsamples its maps)."""
    if heatmap.shape == tuple(size):
        return heatmap
    t = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def rgba(heatmap: np.ndarray, limit: float, cmap: Colormap, alpha: float,
         signed: bool = True) -> np.ndarray:
    """Colours of ``heatmap`` with opacity ``alpha * |value| / limit`` (weak values transparent).

    ``signed``: ``-limit .. +limit`` over the whole (diverging) colour map; otherwise
    ``0 .. limit`` over a sequential one (a map that cannot be negative).
    """
    scaled = np.clip(heatmap / limit, -1.0, 1.0)
    rgba = cmap((scaled + 1.0) / 2.0 if signed else np.clip(scaled, 0.0, 1.0))
    rgba[..., 3] = alpha * np.abs(scaled)
    return rgba


#: The colour map of maps that cannot be negative (rectified Grad-CAM): sequential, not diverging.
SEQUENTIAL_CMAP = "Reds"


def blank_reason(heatmap) -> str | None:
    """Why a map shows nothing, for the reader: ``"zero everywhere"`` (no non-zero value),
    ``"no positive relevance"`` (only negative values: evidence against the class), or None."""
    h = as_numpy(heatmap)
    if not np.any(h):
        return "zero everywhere"
    if not np.any(h > 0):
        return "no positive relevance"
    return None
