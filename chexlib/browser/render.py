"""The browser's pure part: what a browser state shows, as PNG bytes and an HTML caption.

:func:`render` takes a :class:`BrowserState` (class, outcome filter, method, image position,
opacity, scaling, view) and returns a :class:`View`. It touches no widget, so tests call it
directly. The single-class view is composed with numpy (radiograph, signed overlay with opacity
proportional to ``|relevance|``, ground-truth outline) for speed; the all-classes view reuses
:func:`chexlib.plots.heatmaps.grid_classes`, as in the notebooks.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field, replace

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from chexlib.errors import ParameterError
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.observations import OBSERVATIONS, observation_index
from chexlib.plots.heatmap_arrays import colormap, rgba, symmetric_limit
from chexlib.plots.heatmaps import grid_classes

OUTCOME_FILTERS = ("all", "TP", "FP", "FN", "TN")
VIEWS = ("one class", "all classes")
SCALES = ("per_map", "shared")
OUTLINE_RGB = np.array([0.0, 1.0, 0.0])  # lime, as in the notebooks' figures


@dataclass(frozen=True)
class BrowserState:
    """Everything the browser's controls set."""

    observation: str = "Pleural Effusion"
    outcome: str = "all"
    method: str = DEFAULT_COMPOSITE
    position: int = 0
    alpha: float = 0.6
    scale: str = "per_map"
    view: str = "one class"

    def check(self, methods) -> BrowserState:
        """Return self if every field is valid, else raise ParameterError naming it."""
        for name, value, allowed in (("observation", self.observation, OBSERVATIONS),
                                     ("outcome", self.outcome, OUTCOME_FILTERS),
                                     ("method", self.method, tuple(methods)),
                                     ("scale", self.scale, SCALES), ("view", self.view, VIEWS)):
            if value not in allowed:
                raise ParameterError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise ParameterError(f"alpha={self.alpha!r}: expected a number in [0, 1]")
        return self

    def with_(self, **changes) -> BrowserState:
        return replace(self, **changes)


@dataclass
class View:
    """What the browser shows for a state.

    Attributes
    ----------
    png : bytes or None
        The picture; None when there is nothing to show (see ``message``).
    caption : str
        HTML: image, label, probability, threshold, outcome (or the message).
    message : str or None
        Why nothing is shown (e.g. no false negatives for this class).
    rows : list of int
        Reported rows that pass the filter; the slider runs over them.
    row : int or None
        The reported row shown.
    """

    png: bytes | None
    caption: str
    message: str | None = None
    rows: list[int] = field(default_factory=list)
    row: int | None = None


def filtered_rows(reported, observation: str, outcome: str) -> list[int]:
    """Reported rows whose prediction for ``observation`` has ``outcome`` ("all": every row)."""
    if outcome == "all":
        return list(range(len(reported)))
    column = reported.outcomes[observation].to_numpy()
    return [int(r) for r in np.flatnonzero(column == outcome)]


def render(state: BrowserState, reported, source, display_size: int = 384) -> View:
    """The picture and caption for ``state`` (see the module docstring).

    Parameters
    ----------
    state : BrowserState
        ``position`` beyond the filtered images is clamped to the last one.
    reported : ReportedImages
    source : MapSource
    display_size : int
        Side of the single-class picture in pixels (nearest-neighbour upscaling by a whole factor).
    """
    state.check(source.methods)
    rows = filtered_rows(reported, state.observation, state.outcome)
    if not rows:
        message = (f"No {state.outcome} predictions for {state.observation} among the "
                   f"{len(reported)} reported images: choose another outcome or class.")
        return View(png=None, caption=f"<b>{html.escape(message)}</b>", message=message, rows=[])
    row = rows[min(max(int(state.position), 0), len(rows) - 1)]
    maps = source.maps(state.method, row)
    if state.view == "all classes":
        png = _all_classes_png(state, reported, row, maps)
    else:
        png = _one_class_png(state, reported, row, maps, display_size)
    return View(png=png, caption=_caption(state, reported, row, rows), rows=rows, row=row)


def _one_class_png(state, reported, row, maps, display_size) -> bytes:
    j = observation_index(state.observation)
    heat = maps[j]
    limit = float(symmetric_limit(maps, "shared")[j] if state.scale == "shared"
                  else symmetric_limit(heat))
    gray = reported.grayscale(row).astype(np.float32) / 255.0
    colours = rgba(heat, limit, colormap("bwr"), float(state.alpha))
    opacity = colours[..., 3:]
    picture = gray[..., None] * (1.0 - opacity) + colours[..., :3] * opacity
    outline = reported.outline(row, state.observation)
    if outline is not None:
        picture[_boundary(outline)] = OUTLINE_RGB
    factor = max(1, display_size // picture.shape[0])
    picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    return _png(np.rint(picture * 255).astype(np.uint8))


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)
    inner = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return m & ~inner


def _all_classes_png(state, reported, row, maps) -> bytes:
    fig = grid_classes(
        reported.grayscale(row), maps, list(OBSERVATIONS), scale=state.scale,
        probs=reported.probs[row], labels=reported.labels[row],
        outcomes=[reported.outcome(row, name) for name in OBSERVATIONS],
        outlines={name: reported.outline(row, name) for name in OBSERVATIONS},
        columns=7, alpha=float(state.alpha))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _caption(state, reported, row, rows) -> str:
    position = rows.index(row) + 1
    head = (f"{html.escape(reported.image_id(row))} &middot; image {position} of {len(rows)} "
            f"({html.escape(state.outcome)}) &middot; {html.escape(state.method)}")
    if state.view == "all classes":
        return f"<b>{head}</b><br>all 14 observations ({html.escape(state.scale)} scale)"
    outcome = reported.outcome(row, state.observation)
    text = reported.prediction_text(row, state.observation)
    return (f"<b>{head}</b><br>{html.escape(state.observation)}: {html.escape(text)} &middot; "
            f"<b>{html.escape(outcome)}</b>")
