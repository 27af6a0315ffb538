"""Localisation quality of heatmaps against ground-truth masks, batched over maps.

Every metric takes ``maps`` [N, H, W] (float, signed allowed; numpy or torch) and ``masks``
[N, H, W] (bool, or 0/1) and returns one score per map, numpy float64 [N]. Map ``n`` is scored
against mask ``n`` only, so a multi-label batch is simply one row per (image, class) pair. A map
whose mask is empty scores NaN (nothing to localise; drop it or use ``np.nanmean``).

A *blank* map, one with no positive relevance (all zero, or only negative: a rectified Grad-CAM
map of a class the image shows no evidence for), points nowhere: it scores NaN in every metric,
so that every metric agrees on what a blank map is and a mean over maps is a mean over maps that
say something. Report the blank rate (:func:`blank_maps`) beside each mean. Tied maxima (flat
regions of an upsampled coarse map) are scored by their expectation under random tie-breaking,
never by the first pixel in row-major order (which puts them in the top-left corner).

``blank_maps``               True where a map has no positive relevance
``pointing_game``            the map's maximum lies in the mask (Zhang et al. 2018); tied maxima:
                             the fraction inside; optional tolerance in pixels
``relevance_mass_accuracy``  share of the positive relevance inside the mask (Arras et al. 2022)
``relevance_rank_accuracy``  share of the K most relevant pixels inside the mask, K = mask size
``otsu_iou``                 IoU of the Otsu-binarised positive map with the mask
``chance_level``             the mass / rank accuracy a uniform random map gets: the mask's area
                             fraction

Everything is vectorised over the batch (no loop over maps or pixels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from chexlib.errors import ParameterError

OTSU_BINS = 256
#: Zhang et al. 2018's pointing-game tolerance (15 px at 224 px) is an option of
#: :func:`pointing_game`; the default is none (the maximum itself must be inside).
ZHANG_TOLERANCE = 15


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_mask_batch(masks: Any, name: str = "masks") -> np.ndarray:
    """``masks`` as bool [N, H, W]; bool or 0/1 values accepted.

    Raises
    ------
    ParameterError
        Not 3-D, or values other than 0 and 1.
    """
    arr = _to_numpy(masks)
    if arr.ndim != 3:
        raise ParameterError(f"{name}: expected shape [N, H, W], got {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ParameterError(f"{name}: expected a bool or 0/1 array, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise ParameterError(f"{name}: expected only 0 and 1 (or bool), got other values")
    return arr.astype(bool)


def as_map_batch(maps: Any, name: str = "maps") -> np.ndarray:
    """``maps`` as finite float64 [N, H, W].

    Raises
    ------
    ParameterError
        Not 3-D, empty images, not numeric, or containing NaN / inf.
    """
    arr = _to_numpy(maps)
    if arr.ndim != 3 or arr.shape[1] * arr.shape[2] == 0:
        raise ParameterError(f"{name}: expected shape [N, H, W] with H, W > 0, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ParameterError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ParameterError(f"{name}: contains NaN or inf")
    return arr


def _flat_pair(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked maps float64 [N, H*W] and masks bool [N, H*W]."""
    values, regions = as_map_batch(maps), as_mask_batch(masks)
    if regions.shape != values.shape:
        raise ParameterError(
            f"masks: shape {regions.shape} does not match maps shape {values.shape}; "
            "expected one mask per map, [N, H, W] both"
        )
    count = len(values)
    return values.reshape(count, -1), regions.reshape(count, -1)


def _nan_where_empty(scores: np.ndarray, regions: np.ndarray,
                     values: np.ndarray | None = None) -> np.ndarray:
    """NaN where the mask is empty and, given the maps, where the map is blank."""
    defined = regions.any(axis=1)
    if values is not None:
        defined &= ~_blank_rows(values)
    return np.where(defined, scores, np.nan).astype(np.float64)


def _blank_rows(values: np.ndarray) -> np.ndarray:
    return ~(values > 0).any(axis=1)


def blank_maps(maps: Any) -> np.ndarray:
    """Which maps are blank: no positive relevance anywhere (all zero, or only negative).

    Parameters
    ----------
    maps : array or Tensor [N, H, W]

    Returns
    -------
    ndarray bool [N]
        True where every localisation metric is NaN because the map points nowhere.
    """
    values = as_map_batch(maps)
    return _blank_rows(values.reshape(len(values), -1))


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    positive = denominator > 0
    return np.where(positive, numerator / np.where(positive, denominator, 1.0), 0.0)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------


def pointing_game(maps: Any, masks: Any, tolerance: float = 0) -> np.ndarray:
    """Pointing game: whether the map's maximum lies inside the mask, in expectation over ties.

    Parameters
    ----------
    maps : array or Tensor [N, H, W]
        Heatmaps (signed allowed).
    masks : array or Tensor [N, H, W]
        Ground-truth masks (bool or 0/1), one per map.
    tolerance : float
        Pixels: a maximum within this Euclidean distance of the mask counts as inside (Zhang et
        al. 2018 use :data:`ZHANG_TOLERANCE` = 15 at 224 px). Default 0: inside the mask.

    Returns
    -------
    ndarray float64 [N]
        The fraction of the map's tied maxima that lie inside the (tolerance-widened) mask: 1.0
        or 0.0 for a single maximum; the expected hit when a tie is broken at random. NaN where
        the mask is empty or the map is blank (:func:`blank_maps`). (Quantus counts a hit if
        *any* tied maximum is inside.)

    Raises
    ------
    ParameterError
        Malformed maps, masks or tolerance, or shapes that disagree.
    """
    if not (np.isscalar(tolerance) and np.isfinite(tolerance) and tolerance >= 0):
        raise ParameterError(f"tolerance={tolerance!r}: expected a distance in pixels >= 0")
    values, regions = _flat_pair(maps, masks)
    target = regions if tolerance == 0 else _widened(masks, float(tolerance)).reshape(
        regions.shape)
    tied = values == values.max(axis=1, keepdims=True)
    hits = (tied & target).sum(axis=1) / tied.sum(axis=1)
    return _nan_where_empty(hits, regions, values)


def _widened(masks: Any, tolerance: float) -> np.ndarray:
    """Each mask grown by every pixel within ``tolerance`` of it (Euclidean), [N, H, W]."""
    from scipy.ndimage import distance_transform_edt

    regions = as_mask_batch(masks)
    out = np.zeros_like(regions)
    for n, region in enumerate(regions):
        if region.any():
            out[n] = distance_transform_edt(~region) <= tolerance
    return out


def relevance_mass_accuracy(maps: Any, masks: Any) -> np.ndarray:
    """Relevance mass accuracy (Arras et al. 2022): positive relevance inside / positive total.

    Negative relevance counts neither inside nor in the total (Quantus divides by the signed
    total: the same on non-negative maps).

    Parameters
    ----------
    maps : array or Tensor [N, H, W]
    masks : array or Tensor [N, H, W]

    Returns
    -------
    ndarray float64 [N]
        In [0, 1]; NaN where the mask is empty or the map is blank (no positive relevance).

    Raises
    ------
    ParameterError
        Malformed maps or masks, or shapes that disagree.
    """
    values, regions = _flat_pair(maps, masks)
    positive = np.clip(values, 0.0, None)
    inside = (positive * regions).sum(axis=1)
    return _nan_where_empty(_safe_ratio(inside, positive.sum(axis=1)), regions, values)


def relevance_rank_accuracy(maps: Any, masks: Any) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022): share of the top-K pixels inside the mask.

    K is the mask's pixel count. Pixels tied with the K-th largest value share the remaining
    top-K places equally (the expected score under random tie-breaking), so a constant positive
    map scores the chance level K / (H * W); without ties this is the plain count.

    Parameters
    ----------
    maps : array or Tensor [N, H, W]
    masks : array or Tensor [N, H, W]

    Returns
    -------
    ndarray float64 [N]
        In [0, 1]; NaN where the mask is empty or the map is blank.

    Raises
    ------
    ParameterError
        Malformed maps or masks, or shapes that disagree.
    """
    values, regions = _flat_pair(maps, masks)
    top_k = regions.sum(axis=1)
    descending = -np.sort(-values, axis=1)
    kth = descending[np.arange(len(values)), np.maximum(top_k, 1) - 1][:, None]
    above, tied = values > kth, values == kth
    places_left = top_k - above.sum(axis=1)
    hits = (above & regions).sum(axis=1) + _safe_ratio(
        places_left * (tied & regions).sum(axis=1), tied.sum(axis=1))
    return _nan_where_empty(_safe_ratio(hits, top_k), regions, values)


def _otsu_levels(values: np.ndarray, bins: int = OTSU_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Otsu level of each row of ``values`` [N, P] (already clipped) in min-max scaled units.

    Returns the levels [N] (a bin centre; +inf for a constant row, so nothing lies above it) and
    the rows scaled to [0, 1] [N, P].
    """
    count = len(values)
    low, high = values.min(axis=1), values.max(axis=1)
    span = high - low
    varies = span > 0
    scaled = (values - low[:, None]) / np.where(varies, span, 1.0)[:, None]
    index = np.minimum((scaled * bins).astype(np.int64), bins - 1)
    offsets = (np.arange(count) * bins)[:, None]
    hist = np.bincount((index + offsets).ravel(), minlength=count * bins).reshape(count, bins)
    centres = (np.arange(bins) + 0.5) / bins
    levels = centres[_otsu_bin(hist.astype(np.float64), centres)]
    return np.where(varies, levels, np.inf), scaled


def _otsu_bin(hist: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Per row of ``hist`` [N, B], the last background bin ``t`` maximising w0 w1 (m0 - m1)^2.

    The first maximum wins, as in scikit-image.
    """
    weight_low = np.cumsum(hist, axis=1)[:, :-1]
    weight_high = hist.sum(axis=1, keepdims=True) - weight_low
    moment_low = np.cumsum(hist * centres, axis=1)[:, :-1]
    moment_high = (hist * centres).sum(axis=1, keepdims=True) - moment_low
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = moment_low / weight_low - moment_high / weight_high
        variance = weight_low * weight_high * gap**2
    variance = np.where((weight_low > 0) & (weight_high > 0), variance, -np.inf)
    return variance.argmax(axis=1)


def otsu_thresholds(maps: Any, bins: int = OTSU_BINS) -> np.ndarray:
    """Otsu threshold of each map's positive part, from per-map histograms, batched.

    Each map is clipped at 0 and min-max scaled to [0, 1]; its ``bins``-bin histogram gives the
    threshold (a bin centre) that maximises the between-class variance ``w0 w1 (m0 - m1)^2``
    with bins ``0..t`` as background. This is scikit-image's ``threshold_otsu`` on the clipped
    map (bin centres, the first maximum), up to rounding at bin edges.

    Parameters
    ----------
    maps : array or Tensor [N, H, W]
    bins : int

    Returns
    -------
    ndarray float64 [N]
        In the maps' units (``min + centre * (max - min)`` of the clipped map); pixels *above*
        it are the foreground. NaN for a map whose clipped values are constant.
    """
    values = np.clip(as_map_batch(maps), 0.0, None)
    positive = values.reshape(len(values), -1)
    levels, _ = _otsu_levels(positive, bins)
    low, high = positive.min(axis=1), positive.max(axis=1)
    with np.errstate(invalid="ignore"):
        thresholds = low + levels * (high - low)
    return np.where(np.isfinite(levels), thresholds, np.nan)


def otsu_iou(maps: Any, masks: Any) -> np.ndarray:
    """IoU with the mask of each map's positive part binarised at its own Otsu threshold.

    Negative relevance is clipped to 0 first; the threshold comes from a 256-bin histogram of the
    clipped map scaled to [0, 1] (:func:`otsu_thresholds`); pixels above it are the foreground
    (as scikit-image's ``image > threshold_otsu(image)``).

    Parameters
    ----------
    maps : array or Tensor [N, H, W]
    masks : array or Tensor [N, H, W]

    Returns
    -------
    ndarray float64 [N]
        In [0, 1]; 0.0 for a positive map whose values are all equal (no foreground); NaN where
        the mask is empty or the map is blank.

    Raises
    ------
    ParameterError
        Malformed maps or masks, or shapes that disagree.
    """
    values, regions = _flat_pair(maps, masks)
    levels, scaled = _otsu_levels(np.clip(values, 0.0, None))
    foreground = scaled > levels[:, None]
    union = (foreground | regions).sum(axis=1)
    iou = _safe_ratio((foreground & regions).sum(axis=1), union)
    return _nan_where_empty(iou, regions, values)


def chance_level(masks: Any) -> np.ndarray:
    """Expected pointing game, mass and rank accuracy of a uniform random map: the mask's area
    fraction.

    Parameters
    ----------
    masks : array or Tensor [N, H, W]

    Returns
    -------
    ndarray float64 [N]
        ``mask pixels / (H * W)``; NaN where the mask is empty (as the metrics).
    """
    regions = as_mask_batch(masks)
    flat = regions.reshape(len(regions), -1)
    return _nan_where_empty(flat.sum(axis=1) / max(flat.shape[1], 1), flat)
