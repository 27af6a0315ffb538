"""Galleries of a run's reported images: correct and incorrect predictions, methods side by side.

These take a :class:`~chexlib.reported.ReportedImages` and an ``explain`` callable, so LRP
(notebook 04), Grad-CAM (notebook 05) and the comparison (notebook 06) draw the same figures:

``explain(rows, observation) -> maps [len(rows), H, W]``

Each function returns a matplotlib Figure (or None with a reason, when there is nothing to show)
and shows nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import matplotlib.pyplot as plt

from chexlib.display_names import display_name
from chexlib.errors import ParameterError
from chexlib.plots.heatmap_arrays import as_numpy, colormap, heatmap_2d, rgb_heatmap
from chexlib.plots.heatmaps import (
    TITLE_SIZE,
    _colorbar,
    _draw_outline,
    _limits_of,
    _panel_grid,
    grid_images,
)

Explain = Callable[[list[int], str], object]


def outcome_examples(reported, observation: str, n: int,
                     outcomes: Sequence[str] = ("TP", "FP", "FN")) -> list[tuple[str, int]]:
    """Up to ``n`` rows per outcome for ``observation``, most confident first.

    Returns
    -------
    list of (outcome, row)
        In the order of ``outcomes``; an outcome without cases contributes nothing.
    """
    return [(kind, row) for kind in outcomes for row in reported.pick(observation, kind, n)]


def outcome_gallery(reported, observation: str, explain: Explain, n: int = 2,
                    outcomes: Sequence[str] = ("TP", "FP", "FN"), scale: str = "per_map",
                    method: str = "") -> tuple[plt.Figure | None, str]:
    """Correct and incorrect predictions of one observation, each with its heatmap.

    Parameters
    ----------
    reported : ReportedImages
    observation : str
    explain : callable (rows, observation) -> maps [len(rows), H, W]
    n : int
        Images per outcome at most.
    outcomes : sequence of "TP", "FP", "FN", "TN"
    scale : {"per_map", "shared"}
    method : str
        Named in the figure title, by its display name
        (:func:`chexlib.display_names.display_name`) where it is a registered method.

    Returns
    -------
    figure, message
        ``(None, message)`` when no image has any of the outcomes; the message also names the
        outcomes without cases (e.g. no false negatives).
    """
    picked = outcome_examples(reported, observation, n, outcomes)
    missing = [kind for kind in outcomes if kind not in {k for k, _ in picked}]
    note = f"{observation}: no {', '.join(missing)} case(s) among the reported images" if missing else ""
    if not picked:
        return None, note
    rows = [row for _, row in picked]
    maps = as_numpy(explain(rows, observation))
    fig = grid_images(
        [reported.grayscale(r) for r in rows], list(maps),
        [f"{kind} · {reported.prediction_text(r, observation)}" for kind, r in picked],
        scale=scale, outlines=[reported.outline(r, observation) for r in rows],
        columns=min(len(rows), 2 * n if n > 1 else 3))
    fig.suptitle(f"{observation}: correct and incorrect predictions"
                 + (f" · {display_name(method)}" if method else ""))
    return fig, note


def outcome_galleries(reported, observations: Sequence[str], explain: Explain, prefix: str,
                      n: int = 2, outcomes: Sequence[str] = ("TP", "FP", "FN"),
                      scale: str = "per_map",
                      method: str = "") -> Iterator[tuple[str, plt.Figure | None, str]]:
    """:func:`outcome_gallery` of each observation in turn, with the name to save it under.

    Parameters
    ----------
    observations : sequence of str
        One gallery each, in this order (e.g. ``classes_to_show``).
    prefix : str
        Figure names are ``<prefix>_<observation with spaces as underscores>``
        (``04_outcomes_Pleural_Effusion``).
    reported, explain, n, outcomes, scale, method
        As in :func:`outcome_gallery`.

    Yields
    ------
    name, figure, message
        ``figure`` is None when the observation has none of the outcomes (``message`` says so).
        A generator: each figure is drawn when asked for, so a caller can save and show it
        before the next one is drawn.
    """
    for observation in observations:
        fig, note = outcome_gallery(reported, observation, explain, n=n, outcomes=outcomes,
                                    scale=scale, method=method)
        yield f"{prefix}_{observation.replace(' ', '_')}", fig, note


def rgb_grid(maps_by_method: Mapping[str, object], title: str = "",
             scale: str = "per_map", columns: int = 7, cmap: str = "coldnhot",
             percentile: float = 99.5, outline=None) -> plt.Figure:
    """The study's rendering: each map as an RGB heatmap on its own (no radiograph under it).

    Each panel has a colour bar labelled "relevance" (``-limit`` .. ``+limit``; 0 is black in
    ``coldnhot``) and, given ``outline``, the finding's ground truth as a lime contour, since no
    radiograph shows where the finding is.

    Parameters
    ----------
    maps_by_method : dict of method name -> map [H, W]
    scale : {"per_map", "shared"}
    cmap : str
        ``"coldnhot"`` (zennit's; negative cyan-blue, zero black, positive red-yellow) by default.
    outline : bool mask [H, W], optional
    """
    if not maps_by_method:
        raise ParameterError("rgb_grid: maps_by_method is empty")
    names = list(maps_by_method)
    maps = [heatmap_2d(maps_by_method[name]) for name in names]
    limits = _limits_of(maps, scale, percentile)
    fig, axes = _panel_grid(len(names), columns, panel=2.6)
    for ax, name, heatmap, limit in zip(axes, names, maps, limits):
        ax.imshow(rgb_heatmap(heatmap, float(limit), cmap=cmap))
        if outline is not None:
            _draw_outline(ax, outline, heatmap.shape)
        ax.set_title(display_name(name), fontsize=TITLE_SIZE)
        ax.set_axis_off()
        _colorbar(fig, ax, float(limit), colormap(cmap), True, fraction=0.046)
    if title:
        fig.suptitle(title)
    return fig
