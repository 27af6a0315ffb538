"""The browser's controls: ipywidgets wired to :func:`chexlib.browser.render.render`.

Every control change builds a new :class:`~chexlib.browser.render.BrowserState` and renders it
into an ``ipywidgets.Image`` and an ``HTML`` caption. In a running kernel the change is
*debounced*: a "computing ..." line shows at once, and the rendering starts only when the controls
have been still for :attr:`HeatmapBrowser.debounce_s` seconds, so quick slider presses (which
queue while an LRP map is computed) cost one rendering, of the last state. Without an event loop
(tests, scripts) every change renders at once.

Opened without a kernel (JupyterLab, nbviewer, GitHub), an executed notebook shows the picture and
caption of the browser when the cell ran: the display carries them as ``text/html`` and
``image/png`` beside the widget view, and the executed notebook stores the widget state too.
"""

from __future__ import annotations

import asyncio
import base64
import html
import os

import ipywidgets as widgets

from chexlib.browser.render import (
    OUTCOME_FILTERS,
    SCALES,
    VIEWS,
    BrowserState,
    View,
    filtered_rows,
    render,
)
from chexlib.browser.source import MapSource
from chexlib.display_names import display_name
from chexlib.observations import OBSERVATIONS
from chexlib.reported import ReportedImages
from chexlib.session import TrainedRun, open_run


class HeatmapBrowser:
    """Sliders and menus over a run's reported images.

    Parameters
    ----------
    reported : ReportedImages
    source : MapSource
    state : BrowserState, optional
        The first view.

    Attributes
    ----------
    widget : ipywidgets.VBox
        Display it (``display(browser.widget)``, or make the browser the cell's last expression).
    controls : dict of str -> widget
        ``observation``, ``outcome``, ``method``, ``position``, ``alpha``, ``scale``, ``view``.
    view : View
        The last rendering.
    renders : int
        How many renderings ran (the debounce's measure).
    debounce_s : float
        Quiet time before a change is rendered, in a running kernel.
    """

    debounce_s = 0.35

    def __init__(self, reported: ReportedImages, source: MapSource,
                 state: BrowserState | None = None) -> None:
        self.reported, self.source = reported, source
        state = (state or BrowserState(method=source.methods[0])).check(source.methods)
        style = {"description_width": "70px"}
        # Buttons as wide as their labels ("shared by all classes" is cut at the default width).
        buttons = {**style, "button_width": "auto"}
        last = max(len(filtered_rows(reported, state.observation, state.outcome)) - 1, 0)
        self.controls = {
            "observation": widgets.Dropdown(options=list(OBSERVATIONS), value=state.observation,
                                            description="class", style=style),
            "outcome": widgets.ToggleButtons(options=list(OUTCOME_FILTERS), value=state.outcome,
                                             description="outcome", style=buttons),
            "method": widgets.Dropdown(options=[(display_name(m), m) for m in source.methods],
                                       value=state.method, description="method", style=style),
            # 1-based, as the caption counts ("image 2 of 11"); the state's position is 0-based.
            "position": widgets.IntSlider(value=min(state.position, last) + 1, min=1,
                                          max=last + 1, description="image",
                                          continuous_update=False, style=style),
            "alpha": widgets.FloatSlider(value=state.alpha, min=0.0, max=1.0, step=0.05,
                                         description="opacity", continuous_update=False,
                                         style=style),
            "scale": widgets.ToggleButtons(options=[(_SCALE_NAMES[v], v) for v in SCALES],
                                           value=state.scale, description="scale", style=buttons),
            "view": widgets.ToggleButtons(options=list(VIEWS), value=state.view,
                                          description="view", style=buttons),
        }
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.caption = widgets.HTML()
        self.status = widgets.HTML(value="")
        self.status.add_class("chexlib-browser-status")
        self.widget = widgets.VBox([*self.controls.values(), self.status, self.caption,
                                    self.image])
        self.display_size = 384
        self.view: View | None = None
        self.renders = 0
        self._pending: asyncio.TimerHandle | None = None
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.refresh()

    @classmethod
    def from_run(cls, run: TrainedRun | str | os.PathLike, methods=None,
                 state: BrowserState | None = None) -> HeatmapBrowser:
        """A browser over a run (notebooks 02 and 03 have run in it).

        Parameters
        ----------
        run : TrainedRun or path
            A notebook's :func:`chexlib.session.open_run`, whose model, reported images and map
            store it uses; or a run folder, opened with ``open_run``.
        methods : list of str, optional
            The methods to offer (default: every method of the registry on the default layer).
        """
        if not isinstance(run, TrainedRun):
            run = open_run(run)
        return cls(run.reported, MapSource(run.reported, run.store, run.model, methods, run.device),
                   state)

    @property
    def state(self) -> BrowserState:
        values = {name: control.value for name, control in self.controls.items()}
        values["position"] -= 1
        return BrowserState(**values)

    def refresh(self) -> View:
        """Render the current state into the picture and caption."""
        self._pending = None
        self.status.value = BUSY
        try:
            view = render(self.state, self.reported, self.source, display_size=self.display_size)
        finally:
            self.status.value = ""
        self.renders += 1
        slider = self.controls["position"]
        with slider.hold_trait_notifications():
            slider.max = max(len(view.rows), 1)
            slider.disabled = len(view.rows) <= 1
        if view.png is not None:
            self.image.value = view.png
            self.image.layout.display = None
            # The single-class picture at its own size; the 14-panel figure as wide as it fits.
            self.image.layout.width = (f"{self.display_size}px" if self.state.view == "one class"
                                       else "100%")
        else:
            self.image.layout.display = "none"  # an empty selection: the message only
        self.caption.value = view.caption
        self.view = view
        return view

    def _on_change(self, change) -> None:
        owner = change["owner"]
        if owner in (self.controls["observation"], self.controls["outcome"]):
            # Another set of images: start at its first one, without a render in between.
            slider = self.controls["position"]
            if slider.value != 1:
                slider.unobserve(self._on_change, names="value")
                slider.value = 1
                slider.observe(self._on_change, names="value")
        loop = _running_loop()
        if loop is None:
            self.refresh()
            return
        # Debounce: show that a new picture is coming, render once the controls are still.
        self.status.value = BUSY
        if self._pending is not None:
            self._pending.cancel()
        self._pending = loop.call_later(self.debounce_s, self.refresh)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        """The widget, plus its picture and caption for viewers without a kernel."""
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        if self.view is not None and self.view.png is not None:
            png = base64.b64encode(self.view.png).decode("ascii")
            bundle["image/png"] = png
            bundle["text/html"] = (
                f"<div>{self.view.caption}</div><img src='data:image/png;base64,{png}' "
                f"alt='{html.escape(_plain(self.view.caption), quote=True)}'/>"
                "<p><i>A static copy of the heatmap browser: run the notebook to use its "
                "controls.</i></p>")
        bundle["text/plain"] = f"HeatmapBrowser: {_plain(self.view.caption if self.view else '')}"
        return bundle


#: The status line while a rendering is pending or running.
BUSY = "<b>&#8987; computing &hellip;</b> (the picture below is the previous one)"
_SCALE_NAMES = {"per_map": "per map", "shared": "shared by all classes"}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _plain(caption: str) -> str:
    """The caption's text without its HTML tags."""
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", caption)).strip()
