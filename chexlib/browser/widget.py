"""The browser's controls: ipywidgets wired to :func:`chexlib.browser.render.render`.

Every control change builds a new :class:`~chexlib.browser.render.BrowserState` and renders it
into an ``ipywidgets.Image`` and an ``HTML`` caption. Because the picture lives in the widget's
state, an executed notebook saved with its widget state shows the last rendering statically.
"""

from __future__ import annotations

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
    """

    def __init__(self, reported: ReportedImages, source: MapSource,
                 state: BrowserState | None = None) -> None:
        self.reported, self.source = reported, source
        state = (state or BrowserState(method=source.methods[0])).check(source.methods)
        style = {"description_width": "70px"}
        last = max(len(filtered_rows(reported, state.observation, state.outcome)) - 1, 0)
        self.controls = {
            "observation": widgets.Dropdown(options=list(OBSERVATIONS), value=state.observation,
                                            description="class", style=style),
            "outcome": widgets.ToggleButtons(options=list(OUTCOME_FILTERS), value=state.outcome,
                                             description="outcome", style=style),
            "method": widgets.Dropdown(options=list(source.methods), value=state.method,
                                       description="method", style=style),
            "position": widgets.IntSlider(value=min(state.position, last), min=0, max=last,
                                          description="image",
                                          continuous_update=False, style=style),
            "alpha": widgets.FloatSlider(value=state.alpha, min=0.0, max=1.0, step=0.05,
                                         description="opacity", continuous_update=False,
                                         style=style),
            "scale": widgets.ToggleButtons(options=list(SCALES), value=state.scale,
                                           description="scale", style=style),
            "view": widgets.ToggleButtons(options=list(VIEWS), value=state.view,
                                          description="view", style=style),
        }
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.caption = widgets.HTML()
        self.widget = widgets.VBox([*self.controls.values(), self.caption, self.image])
        self.display_size = 384
        self.view: View | None = None
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
        return BrowserState(**values)

    def refresh(self) -> View:
        """Render the current state into the picture and caption."""
        view = render(self.state, self.reported, self.source, display_size=self.display_size)
        slider = self.controls["position"]
        with slider.hold_trait_notifications():
            slider.max = max(len(view.rows) - 1, 0)
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
            if slider.value != 0:
                slider.unobserve(self._on_change, names="value")
                slider.value = 0
                slider.observe(self._on_change, names="value")
        self.refresh()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
