"""The heatmap browser: a run's reported images by class, correctness and method.

``chexlib.browser.source``  maps by method and image: from the run's store, else computed and cached
``chexlib.browser.render``  the pure part: a browser state -> the picture and its caption
``chexlib.browser.widget``  the ipywidgets controls wired to :func:`render`
"""

from chexlib.browser.render import (
    OUTCOME_FILTERS,
    VIEWS,
    BrowserState,
    View,
    filtered_rows,
    focus_state,
    render,
)
from chexlib.browser.source import MapSource
from chexlib.browser.widget import HeatmapBrowser

__all__ = ["OUTCOME_FILTERS", "VIEWS", "BrowserState", "HeatmapBrowser", "MapSource", "View",
           "filtered_rows", "focus_state", "render"]
