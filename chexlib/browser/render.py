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
from PIL import Image, ImageDraw, ImageFont

from chexlib.errors import ParameterError
from chexlib.display_names import display_name
from chexlib.methods import CAM_METHODS, COMBINED_METHODS, DEFAULT_COMPOSITE, parse_method
from chexlib.observations import OBSERVATIONS, observation_index
from chexlib.plots.heatmap_arrays import (
    SEQUENTIAL_CMAP,
    blank_reason,
    colormap,
    rgba,
    symmetric_limit,
)
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


def blank_message(reported, row: int, observation: str, method: str, heat: np.ndarray
                  ) -> str | None:
    """Why the map of ``observation`` on ``row`` shows nothing, in words; None if it shows
    something (:func:`~chexlib.plots.heatmap_arrays.blank_reason`)."""
    reason = blank_reason(heat)
    if reason is None:
        return None
    kind, _ = parse_method(method)
    p = float(np.clip(reported.probs[row, observation_index(observation)], 1e-7, 1 - 1e-7))
    logit = float(np.log(p / (1.0 - p)))
    if reason == "zero everywhere" and kind in CAM_METHODS:
        why = (f"{display_name(kind)}'s ReLU removed all evidence: the class's weighted "
               f"activations are negative everywhere (logit {logit:+.2f})")
    elif reason == "zero everywhere" and kind in COMBINED_METHODS:
        why = "the Grad-CAM gate is zero everywhere (Grad-CAM's ReLU removed all evidence)"
    elif reason == "zero everywhere":
        why = "no pixel carries relevance for this class"
    else:
        why = (f"the map holds only evidence against {observation} (blue; logit {logit:+.2f})")
    return f"{reason}: {why}"


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
    blank : str or None
        Why the map shown is blank (:func:`blank_message`), also written on the picture.
    """

    png: bytes | None
    caption: str
    message: str | None = None
    rows: list[int] = field(default_factory=list)
    row: int | None = None
    blank: str | None = None


def focus_state(reported, observation: str, row: int, method: str, **fields) -> BrowserState:
    """A browser state that opens on reported ``row`` for ``observation``: filtered to that
    row's outcome, positioned on it (a notebook's focus case)."""
    if observation not in OBSERVATIONS:
        raise ParameterError(f"observation={observation!r}: expected one of "
                             f"{', '.join(OBSERVATIONS)}")
    if not 0 <= int(row) < len(reported):
        raise ParameterError(f"row={row!r}: expected a reported row, 0 to {len(reported) - 1}")
    outcome = reported.outcome(int(row), observation)
    position = filtered_rows(reported, observation, outcome).index(int(row))
    return BrowserState(observation=observation, outcome=outcome, method=method,
                        position=position, **fields)


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
    blank = None
    if state.view == "all classes":
        png = _all_classes_png(state, reported, row, maps)
    else:
        heat = maps[observation_index(state.observation)]
        blank = blank_message(reported, row, state.observation, state.method, heat)
        png = _one_class_png(state, reported, row, maps, display_size, blank)
    return View(png=png, caption=_caption(state, reported, row, rows, blank), rows=rows, row=row,
                blank=blank)


def _one_class_png(state, reported, row, maps, display_size, blank=None) -> bytes:
    j = observation_index(state.observation)
    heat = maps[j]
    limit = float(symmetric_limit(maps, "shared")[j] if state.scale == "shared"
                  else symmetric_limit(heat))
    gray = reported.grayscale(row).astype(np.float32) / 255.0
    signed = bool((maps < 0).any())  # one convention per method: diverging if it can be < 0
    cmap = colormap("bwr" if signed else SEQUENTIAL_CMAP)
    colours = rgba(heat, limit, cmap, float(state.alpha), signed=signed)
    opacity = colours[..., 3:]
    picture = gray[..., None] * (1.0 - opacity) + colours[..., :3] * opacity
    outline = reported.outline(row, state.observation)
    if outline is not None:
        picture[_boundary(outline)] = OUTLINE_RGB
    factor = max(1, display_size // picture.shape[0])
    picture = np.repeat(np.repeat(picture, factor, axis=0), factor, axis=1)
    pixels = np.rint(picture * 255).astype(np.uint8)
    if blank is not None:
        pixels = _banner(pixels, blank.split(":")[0])
    return _png(pixels)


def _banner(pixels: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark band across the top of the picture."""
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    size = max(10, image.height // 20)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    draw.rectangle([0, 0, image.width, int(size * 1.8)], fill=(0, 0, 0))
    draw.text((size // 2, int(size * 0.35)), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


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
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _caption(state, reported, row, rows, blank=None) -> str:
    position = rows.index(row) + 1
    head = (f"{html.escape(reported.image_id(row))} &middot; image {position} of {len(rows)} "
            f"({html.escape(state.outcome)}) &middot; {html.escape(display_name(state.method))}")
    if state.view == "all classes":
        scale = "one scale for all classes" if state.scale == "shared" else "a scale per class"
        return f"<b>{head}</b><br>all 14 observations ({scale})"
    outcome = reported.outcome(row, state.observation)
    text = reported.prediction_text(row, state.observation)
    caption = (f"<b>{head}</b><br>{html.escape(state.observation)}: {html.escape(text)} "
               f"&rarr; <b>{html.escape(outcome)}</b>")
    if blank is not None:
        caption += f"<br><i>This map shows nothing &mdash; {html.escape(blank)}.</i>"
    return caption
