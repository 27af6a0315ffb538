"""Heatmap figures: signed relevance maps over the radiograph, per class, per method, per image.

Relevance (LRP) is signed: positive evidence for a class and negative evidence against it. Both are
drawn on a *diverging* colour map centred on zero with symmetric limits ``[-limit, +limit]``, so
that 0 always has the centre colour and the negative contributions stay visible. Weak values are
made transparent (opacity proportional to ``|value| / limit``), so the anatomy shows through.
Non-negative maps (plain Grad-CAM) use the same scale and simply never reach the negative half.

The colour scale and RGB rendering live in :mod:`chexlib.plots.heatmap_arrays` (re-exported here:
:func:`symmetric_limit`, :func:`rgb_heatmap`). Every function returns a matplotlib object and
shows nothing.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize

from chexlib.errors import ParameterError
from chexlib.display_names import display_name
from chexlib.plots.heatmap_arrays import (
    SEQUENTIAL_CMAP,
    as_numpy,
    blank_reason,
    colormap,
    grayscale,
    heatmap_2d,
    limit_or_default,
    resize_map,
    rgb_heatmap,
    rgba,
    symmetric_limit,
)

__all__ = ["class_title", "grid_classes", "grid_images", "grid_methods", "overlay",
           "rgb_heatmap", "symmetric_limit", "with_and_without"]

OUTLINE_COLOUR = "lime"  # distinct from the red/blue/white of the diverging maps
_OUTCOME_CODES = ("TP", "FP", "FN", "TN")

# --------------------------------------------------------------------------------------------
# One panel
# --------------------------------------------------------------------------------------------

def overlay(image, heatmap, limit: float | None = None, alpha: float = 0.5,
            cmap: str | Colormap = "bwr", ax: plt.Axes | None = None, outline=None,
            title: str | None = None, colorbar: bool = False,
            signed: bool | None = None) -> plt.Axes:
    """Draw a signed heatmap over the grayscale radiograph.

    Parameters
    ----------
    image : ndarray or Tensor
        [H, W] in [0, 1] or uint8, or a normalised [3, H, W] tensor (see :func:`grayscale`).
    heatmap : ndarray or Tensor, shape [h, w]
        Signed map; resized bilinearly to [H, W] when its resolution differs from the image's.
    limit : float, optional
        Colour scale ``[-limit, +limit]``; default :func:`symmetric_limit` of the map.
    alpha : float in [0, 1]
        Opacity of the strongest values (``|value| >= limit``); weaker values are proportionally
        more transparent, zero is fully transparent.
    cmap : str or Colormap
        A diverging colour map (zennit palette or matplotlib name), centred on 0.
    ax : Axes, optional
        Where to draw; default a new figure.
    outline : bool ndarray [H, W], optional
        Ground-truth mask, drawn as a contour (resized nearest-neighbour if its size differs).
    title : str, optional
    colorbar : bool
        Add a colour bar labelled "relevance", from ``-limit`` to ``+limit`` (from 0 for a
        map that is not signed); none for a map that is zero everywhere.
    signed : bool, optional
        Whether the map can be negative: a diverging colour map centred on 0; otherwise the
        default ``"bwr"`` becomes the sequential :data:`SEQUENTIAL_CMAP` from 0. Default: the
        map is signed if it has a negative value. A map without positive values says so on the
        panel (:func:`~chexlib.plots.heatmap_arrays.blank_reason`).

    Returns
    -------
    Axes
        The axes drawn on (``ax.figure`` is the figure).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"overlay: alpha must be in [0, 1], got {alpha}")
    gray = grayscale(image)
    h = resize_map(heatmap_2d(heatmap), gray.shape)
    limit = limit_or_default(h, limit)
    signed = bool((h < 0).any()) if signed is None else signed
    cm = colormap(cmap if signed or not isinstance(cmap, str) or cmap != "bwr"
                  else SEQUENTIAL_CMAP)
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0)
    ax.imshow(rgba(h, limit, cm, alpha, signed=signed))
    if outline is not None:
        _draw_outline(ax, outline, gray.shape)
    reason = blank_reason(h)
    if reason is not None:  # say so on the picture, not a bare radiograph with a dummy scale
        ax.text(0.5, 0.5, reason, transform=ax.transAxes, ha="center", va="center",
                fontsize=TITLE_SIZE, color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none"})
    if colorbar and reason != "zero everywhere":
        _colorbar(ax.figure, ax, limit, cm, signed, fraction=0.046)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=TITLE_SIZE)
    return ax


#: Panel titles and notes: at least the size of the colour bars' numbers (COLORBAR_SIZE).
TITLE_SIZE = 9
COLORBAR_SIZE = 8


def _colorbar(fig, ax, limit: float, cm, signed: bool, fraction: float) -> None:
    low = -limit if signed else 0.0
    mappable = ScalarMappable(norm=Normalize(low, limit), cmap=cm)
    bar = fig.colorbar(mappable, ax=ax, fraction=fraction, pad=0.02,
                       ticks=[low, 0, limit] if signed else [0, limit], format="%.2g")
    bar.ax.tick_params(labelsize=COLORBAR_SIZE)
    bar.set_label("relevance", fontsize=COLORBAR_SIZE)


def _draw_outline(ax: plt.Axes, mask, size: tuple[int, int]) -> None:
    m = as_numpy(mask).astype(bool)
    if m.ndim != 2:
        raise ParameterError(f"outline must be a boolean mask [H, W], got shape {m.shape}")
    if m.shape != tuple(size):
        # Nearest neighbour keeps a mask a mask.
        rows = (np.arange(size[0]) * m.shape[0] // size[0])[:, None]
        cols = (np.arange(size[1]) * m.shape[1] // size[1])[None, :]
        m = m[rows, cols]
    if m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[OUTLINE_COLOUR], linewidths=1.0)


# --------------------------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------------------------

def _maps_3d(maps, name: str) -> np.ndarray:
    x = as_numpy(maps).astype(np.float32)
    if x.ndim != 3:
        raise ParameterError(f"{name} must be [K, H, W], got shape {x.shape}")
    return x


def _panel_grid(n: int, columns: int, panel: float = 2.8):
    """A figure with ``n`` axes in rows of ``columns`` (unused slots removed)."""
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    # Constrained layout makes room for titles and colour bars without overlaps.
    fig, axes = plt.subplots(rows, columns, figsize=(panel * columns, (panel + 0.5) * rows),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig, list(axes.flat[:n])


def _draw_panels(fig, axes, images, maps, titles, limits, scale, outlines, alpha, cmap):
    """Overlay each map on its image; colour bars per panel, or one for a shared scale.

    One colour convention per figure: diverging if any of its maps is negative somewhere,
    else sequential from 0 (rectified maps)."""
    signed = any(bool((np.asarray(m) < 0).any()) for m in maps)
    for k, ax in enumerate(axes):
        outline = None if outlines is None else outlines[k]
        overlay(images[k], maps[k], limit=limits[k], alpha=alpha, cmap=cmap, ax=ax,
                outline=outline, title=titles[k], colorbar=scale == "per_map", signed=signed)
    if scale == "shared":
        cm = colormap(cmap if signed or cmap != "bwr" else SEQUENTIAL_CMAP)
        _colorbar(fig, axes, float(limits[0]), cm, signed, fraction=0.02)


def _label_text(label) -> str:
    value = float(label)
    if np.isnan(value):
        return "label blank"
    names = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}
    return f"label {names.get(value, format(value, 'g'))}"


def class_title(name: str, label=None, prob=None, outcome=None) -> str:
    """Panel title: the class, then its label, probability and outcome where given."""
    parts = []
    if label is not None:
        parts.append(_label_text(label))
    if prob is not None:
        parts.append(f"p={float(prob):.2f}")
    if outcome is not None:
        if str(outcome) not in _OUTCOME_CODES:
            raise ParameterError(f"outcome must be one of {_OUTCOME_CODES}, got {outcome!r}")
        parts.append(str(outcome))
    head = "\n".join(textwrap.wrap(name, 26))
    return head + ("\n" + " · ".join(parts) if parts else "")


def _per_class(values, k: int, name: str):
    if values is None:
        return [None] * k
    values = list(values)
    if len(values) != k:
        raise ParameterError(f"{name} must have one entry per class ({k}), got {len(values)}")
    return values


def grid_classes(image, maps, class_names: Sequence[str], scale: str = "per_map",
                 probs=None, labels=None, outcomes=None, outlines=None, columns: int = 5,
                 alpha: float = 0.5, cmap: str | Colormap = "bwr",
                 percentile: float = 99.5) -> plt.Figure:
    """One radiograph with the heatmap of each of its classes.

    Parameters
    ----------
    image : ndarray or Tensor
        The radiograph (see :func:`grayscale`).
    maps : ndarray or Tensor, shape [K, H, W]
        One signed map per class.
    class_names : sequence of K str
    scale : {"per_map", "shared"}
        See :func:`symmetric_limit`; ``"shared"`` lets the dominant class stand out (LRP
        relevance of every class is on the scale of its logit).
    probs, labels : sequences of K numbers, optional
        Predicted probability; label (1, 0, -1 uncertain, NaN blank).
    outcomes : sequence of K of "TP" / "FP" / "FN" / "TN", optional
    outlines : dict class name -> bool mask [H, W], or sequence of K masks or None, optional
    columns : int
        Panels per row.

    Returns
    -------
    Figure
        K heatmap axes titled by class (plus colour-bar axes).
    """
    m = _maps_3d(maps, "maps")
    k = len(m)
    if len(class_names) != k:
        raise ParameterError(f"class_names has {len(class_names)} names for {k} maps")
    if isinstance(outlines, Mapping):
        outlines = [outlines.get(name) for name in class_names]
    outlines = _per_class(outlines, k, "outlines")
    probs, labels, outcomes = (_per_class(v, k, n) for v, n in
                               ((probs, "probs"), (labels, "labels"), (outcomes, "outcomes")))
    titles = [class_title(class_names[i], labels[i], probs[i], outcomes[i]) for i in range(k)]
    limits = symmetric_limit(m, scale, percentile)
    fig, axes = _panel_grid(k, columns)
    _draw_panels(fig, axes, [image] * k, m, titles, limits, scale, outlines, alpha, cmap)
    return fig


def grid_methods(image, maps_by_method: Mapping[str, object], class_name: str,
                 scale: str = "per_map", outline=None, columns: int = 6, alpha: float = 0.5,
                 cmap: str | Colormap = "bwr", percentile: float = 99.5) -> plt.Figure:
    """One radiograph, one class, the map of every method (LRP composite, Grad-CAM) side by side.

    Parameters
    ----------
    image : ndarray or Tensor
        The radiograph (see :func:`grayscale`).
    maps_by_method : dict of method name -> ndarray [H, W] (or [h, w], upsampled)
    class_name : str
        The figure's title.
    scale : {"per_map", "shared"}
        ``"per_map"`` (default): methods differ in scale (LRP sums to the logit, Grad-CAM does
        not), so each gets its own limit. ``"shared"`` needs maps of one resolution.
    outline : bool mask [H, W], optional
        The class's ground truth, drawn on every panel.

    Returns
    -------
    Figure
    """
    if not maps_by_method:
        raise ParameterError("grid_methods: maps_by_method is empty")
    names = list(maps_by_method)
    maps = [heatmap_2d(maps_by_method[n]) for n in names]
    limits = _limits_of(maps, scale, percentile)
    fig, axes = _panel_grid(len(names), columns, panel=3.0)
    _draw_panels(fig, axes, [image] * len(names), maps, [display_name(n) for n in names],
                 limits, scale, [outline] * len(names), alpha, cmap)
    fig.suptitle(class_name)
    return fig


def with_and_without(image_with, image_without, maps_with: Mapping[str, object],
                     maps_without: Mapping[str, object], title: str, outline=None,
                     pairs_per_row: int = 4, alpha: float = 0.5, cmap: str | Colormap = "bwr",
                     percentile: float = 99.5) -> plt.Figure:
    """Each method's map of one image with the confounder, beside its map of the image without.

    A method's two panels share one colour limit (the larger of the two), so that relevance
    leaving the confounder shows as a change of colour; methods differ in scale and each gets its
    own. Panels come in pairs, ``pairs_per_row`` methods per row, each over its own radiograph.

    Parameters
    ----------
    image_with, image_without : ndarray or Tensor
        The same radiograph with and without the confounder (see :func:`grayscale`).
    maps_with, maps_without : dict of method name -> ndarray [H, W]
        The same methods' maps of each.
    outline : bool mask [H, W], optional
        The confounder's ground truth, drawn on every panel.
    """
    names = list(maps_with)
    if not names or set(names) != set(maps_without):
        raise ParameterError(f"with_and_without: maps_with {names} and maps_without "
                             f"{list(maps_without)} must name the same, non-empty methods")
    images, maps, titles, limits = [], [], [], []
    for name in names:
        pair = [heatmap_2d(maps_with[name]), heatmap_2d(maps_without[name])]
        limit = max(float(symmetric_limit(m, "per_map", percentile)) for m in pair)
        images += [image_with, image_without]
        maps += pair
        titles += [f"{display_name(name)}\nwith", f"{display_name(name)}\nwithout"]
        limits += [limit, limit]
    fig, axes = _panel_grid(len(maps), 2 * pairs_per_row, panel=2.6)
    _draw_panels(fig, axes, images, maps, titles, np.asarray(limits), "per_map",
                 [outline] * len(maps), alpha, cmap)
    fig.suptitle(title)
    return fig


def _limits_of(maps: list[np.ndarray], scale: str, percentile: float) -> np.ndarray:
    """Limits of maps that may differ in size: per map, or the largest of them when shared."""
    limits = np.array([float(symmetric_limit(m, "per_map", percentile)) for m in maps])
    if scale not in ("per_map", "shared"):
        raise ParameterError(f"scale must be 'per_map' or 'shared', got {scale!r}")
    return np.full_like(limits, limits.max()) if scale == "shared" else limits


def grid_images(images: Sequence, maps: Sequence, titles: Sequence[str],
                scale: str = "per_map", outlines: Sequence | None = None, columns: int = 4,
                alpha: float = 0.5, cmap: str | Colormap = "bwr",
                percentile: float = 99.5) -> plt.Figure:
    """Several radiographs (e.g. TP / FP / FN examples of one class), each with its map.

    Parameters
    ----------
    images : sequence of N images (see :func:`grayscale`)
    maps : sequence of N maps [H, W] (or a [N, H, W] array)
    titles : sequence of N str
    scale : {"per_map", "shared"}
        ``"shared"``: one colour scale for all images (compares relevance across images).
    outlines : sequence of N bool masks or None, optional

    Returns
    -------
    Figure
    """
    n = len(images)
    if len(maps) != n or len(titles) != n:
        raise ParameterError(
            f"grid_images: {n} images but {len(maps)} maps and {len(titles)} titles")
    if n == 0:
        raise ParameterError("grid_images: no images given")
    outlines = _per_class(outlines, n, "outlines")
    hm = [heatmap_2d(m) for m in maps]
    limits = _limits_of(hm, scale, percentile)
    fig, axes = _panel_grid(n, columns, panel=3.0)
    wrapped = ["\n".join(textwrap.wrap(t, 34)) for t in titles]
    _draw_panels(fig, axes, list(images), hm, wrapped, limits, scale, outlines, alpha, cmap)
    return fig
