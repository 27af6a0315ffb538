"""The heatmap browser: the pure render function and the widget, driven as a person would.

References: the outcome table written by the fixture (which rows a filter must show), the
radiograph itself (opacity 0 must show it unchanged), the colour map's end colours (opacity 1 at
the colour limit), and the heatmap store (a map computed on demand must be stored once).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from chexlib.browser import BrowserState, HeatmapBrowser, filtered_rows, render
from chexlib.observations import OBSERVATIONS
from chexlib.plots.heatmap_arrays import symmetric_limit

SIZE = 48  # conftest.TINY_SIZE
METHODS = ["epsilon_plus_flat", "gradcam"]


@pytest.fixture(scope="module")
def browser(tiny_run):
    root, run_dir, _, _ = tiny_run
    return HeatmapBrowser.from_run(run_dir, methods=METHODS)  # the demo run's params.yaml


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _a_pair(outcomes, want_empty: bool):
    """An (observation, outcome) with no rows (want_empty) or with at least two rows."""
    for j, name in enumerate(OBSERVATIONS):
        for kind in ("TP", "FP", "FN", "TN"):
            count = int((outcomes[:, j] == kind).sum())
            if (count == 0) if want_empty else (count >= 2):
                return name, kind, count
    # The demo run is deterministic: a missing pair means it changed, not a reason to skip.
    pytest.fail(f"the demo run has no (observation, outcome) pair with "
                f"{'no' if want_empty else 'two or more'} images")


def test_filter_follows_the_outcome_table(browser, tiny_run):
    _, _, _, outcomes = tiny_run
    name, kind, count = _a_pair(outcomes, want_empty=False)
    rows = filtered_rows(browser.reported, name, kind)
    j = OBSERVATIONS.index(name)
    assert rows == [i for i in range(len(outcomes)) if outcomes[i, j] == kind] and len(rows) == count
    assert filtered_rows(browser.reported, name, "all") == list(range(len(outcomes)))


def test_opacity_zero_shows_the_radiograph_and_one_shows_the_colours(browser):
    row_state = BrowserState(observation="Edema", method="epsilon_plus_flat", position=3)
    plain = _pixels(render(row_state.with_(alpha=0.0), browser.reported, browser.source).png)
    assert plain.shape == (384, 384, 3)  # 48 px x 8
    gray = browser.reported.grayscale(3)
    outline = browser.reported.outline(3, "Edema")
    expected = np.repeat(np.repeat(gray, 8, 0), 8, 1)
    inside = np.ones_like(expected, dtype=bool)
    if outline is not None:  # the outline is drawn over the radiograph
        inside = ~np.repeat(np.repeat(outline, 8, 0), 8, 1)
    assert np.abs(plain[..., 0].astype(int) - expected)[inside].max() <= 1
    full = _pixels(render(row_state.with_(alpha=1.0), browser.reported, browser.source).png)
    heat = browser.source.maps("epsilon_plus_flat", 3)[OBSERVATIONS.index("Edema")]
    limit = float(symmetric_limit(heat))
    scale = np.repeat(np.repeat(heat / limit, 8, 0), 8, 1)
    red, blue = full[(scale >= 1) & inside], full[(scale <= -1) & inside]
    assert len(red) + len(blue) > 0  # the strongest 0.5 % of pixels reach the limit
    assert (red[:, 0] >= 250).all() and (red[:, 2] <= 5).all()  # bwr's ends: pure red
    assert (blue[:, 2] >= 250).all() and (blue[:, 0] <= 5).all()  # and pure blue


def test_empty_selection_gives_a_message_not_a_traceback(browser, tiny_run):
    _, _, _, outcomes = tiny_run
    name, kind, _ = _a_pair(outcomes, want_empty=True)
    view = render(BrowserState(observation=name, outcome=kind, method="gradcam"),
                  browser.reported, browser.source)
    assert view.png is None and view.rows == []
    assert f"No {kind} predictions for {name}" in view.message and view.message in view.caption


def test_bad_state_names_the_field(browser):
    with pytest.raises(ValueError, match="method='smoothgrad': expected one of epsilon_plus_flat"):
        render(BrowserState(method="smoothgrad"), browser.reported, browser.source)
    with pytest.raises(ValueError, match="outcome='TPN'"):
        render(BrowserState(outcome="TPN"), browser.reported, browser.source)


def test_widget_controls_change_what_is_rendered(browser, tiny_run):
    _, _, probs, outcomes = tiny_run
    controls = browser.controls
    name, kind, count = _a_pair(outcomes, want_empty=False)
    controls["observation"].value = name
    controls["outcome"].value = kind
    # The slider counts from 1, as the caption does.
    assert controls["position"].max == count and controls["position"].value == 1
    first = browser.image.value
    first_row = browser.view.row
    controls["position"].value = 2  # the slider
    assert browser.view.row != first_row and browser.image.value != first
    assert f"image 2 of {count}" in browser.caption.value
    j = OBSERVATIONS.index(name)
    p = probs[browser.view.row, j]
    label = "positive" if kind in ("TP", "FN") else "negative"
    assert (f"label {label} · predicted {p:.2f} {'≥' if p >= 0.5 else '<'} threshold 0.50 "
            f"&rarr; <b>{kind}</b>") in browser.caption.value
    before = browser.image.value
    controls["method"].value = "gradcam"
    assert browser.image.value != before and "Grad-CAM" in browser.caption.value
    assert ("Grad-CAM", "gradcam") in controls["method"].options  # display names, values kept
    controls["alpha"].value = 0.2
    controls["scale"].value = "shared"
    controls["view"].value = "all classes"
    assert "all 14 observations" in browser.caption.value
    assert _pixels(browser.image.value).shape[1] > 384  # the 14-panel figure
    controls["view"].value = "one class"
    empty_name, empty_kind, _ = _a_pair(outcomes, want_empty=True)
    controls["observation"].value = empty_name
    controls["outcome"].value = empty_kind
    assert browser.image.layout.display == "none" and "No " in browser.caption.value
    assert controls["position"].disabled


def test_missing_maps_are_computed_once_and_stored(tiny_run):
    root, run_dir, _, _ = tiny_run
    fresh = HeatmapBrowser.from_run(run_dir, methods=["zplus"],
                                    state=BrowserState(method="zplus", position=5))
    store, path = fresh.source.store, fresh.reported.paths[5]
    assert fresh.source.computed == 1 and store.has("zplus", path)
    fresh.controls["alpha"].value = 0.3
    assert fresh.source.computed == 1  # same image: the map is not recomputed
    fresh.controls["position"].value = 1  # the slider is 1-based: image 1 is row 0
    fresh.controls["position"].value = 6
    assert fresh.source.computed == 2  # image 0 was new; image 5 came back from the store
    again = HeatmapBrowser.from_run(run_dir, methods=["zplus"],
                                    state=BrowserState(method="zplus", position=5))
    assert again.source.computed == 0


def _blank_gradcam_case(browser):
    """(observation, row) of a Grad-CAM map that is zero everywhere in the demo run."""
    for row in range(len(browser.reported)):
        maps = browser.source.maps("gradcam", row)
        for j, name in enumerate(OBSERVATIONS):
            if not maps[j].any():
                return name, row
    pytest.fail("the demo run has no all-zero Grad-CAM map (it is deterministic: it changed)")


def test_a_blank_map_says_so_on_the_picture_and_in_the_caption(browser):
    name, row = _blank_gradcam_case(browser)
    state = BrowserState(observation=name, method="gradcam", position=row, alpha=1.0)
    view = render(state, browser.reported, browser.source)
    assert view.blank.startswith("zero everywhere: Grad-CAM's ReLU removed all evidence")
    assert "This map shows nothing" in view.caption and "logit" in view.caption
    pixels = _pixels(view.png)
    plain = _pixels(render(state.with_(alpha=0.0), browser.reported, browser.source).png)
    band = pixels[: pixels.shape[0] // 10]
    # The banner: a black band with white text over the top of the radiograph.
    assert (band == 0).all(axis=-1).mean() > 0.5 and (band == 255).all(axis=-1).any()
    assert np.array_equal(pixels[pixels.shape[0] // 5:], plain[plain.shape[0] // 5:])
    # LRP's map of the same case: blank only where it has no positive value, and then it says
    # the map is evidence against the class.
    signed = render(state.with_(method="epsilon_plus_flat"), browser.reported, browser.source)
    heat = browser.source.maps("epsilon_plus_flat", row)[OBSERVATIONS.index(name)]
    if (heat > 0).any():
        assert signed.blank is None and "shows nothing" not in signed.caption
    else:
        assert signed.blank.startswith("no positive relevance: the map holds only evidence "
                                       f"against {name}")


def test_quick_changes_in_a_running_kernel_render_once(tiny_run):
    import asyncio

    _, run_dir, _, _ = tiny_run
    fresh = HeatmapBrowser.from_run(run_dir, methods=METHODS)
    fresh.debounce_s = 0.2
    start = fresh.renders

    async def three_quick_moves():
        for value in (2, 3, 4):
            fresh.controls["position"].value = value
            await asyncio.sleep(0.02)
        busy = fresh.status.value
        await asyncio.sleep(0.5)
        return busy

    busy = asyncio.run(three_quick_moves())
    assert "computing" in busy  # shown while the change was pending
    assert fresh.renders == start + 1 and fresh.view.row == 3  # one rendering, of the last state
    assert fresh.status.value == ""


def test_the_display_carries_a_static_picture_for_viewers_without_a_kernel(tiny_run):
    import base64

    browser = HeatmapBrowser.from_run(tiny_run[1], methods=METHODS)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == browser.view.png
    assert bundle["image/png"] in bundle["text/html"] and "static copy" in bundle["text/html"]
    assert bundle["text/plain"].startswith("HeatmapBrowser: ") and "VBox" not in bundle["text/plain"]


def test_focus_state_opens_on_the_row_filtered_to_its_outcome(browser, tiny_run):
    from chexlib.browser import focus_state

    _, _, _, outcomes = tiny_run
    name, kind, _ = _a_pair(outcomes, want_empty=False)
    rows = filtered_rows(browser.reported, name, kind)
    state = focus_state(browser.reported, name, rows[1], "gradcam")
    assert (state.outcome, state.position, state.method) == (kind, 1, "gradcam")
    assert render(state, browser.reported, browser.source).row == rows[1]
    with pytest.raises(ValueError, match=r"row=99: expected a reported row, 0 to 11"):
        focus_state(browser.reported, name, 99, "gradcam")
    with pytest.raises(ValueError, match="observation='Edemas'"):
        focus_state(browser.reported, "Edemas", 0, "gradcam")
