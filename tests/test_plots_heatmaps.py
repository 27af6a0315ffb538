"""chexlib.plots.heatmaps: colour scales, rendered colours and grid layouts, checked by hand."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from chexlib.errors import ParameterError
from chexlib.plots import (
    grid_classes,
    grid_images,
    grid_methods,
    overlay,
    rgb_heatmap,
    symmetric_limit,
)
from chexlib.plots.heatmap_arrays import resize_map

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def heatmap_axes(fig):
    """The panels that show a radiograph (colour-bar axes hold no images)."""
    return [ax for ax in fig.axes if ax.get_images()]


def pixel(ax, x: float, y: float) -> np.ndarray:
    """RGB (0-255) rendered at data coordinates (x, y) of ``ax``."""
    fig = ax.figure
    fig.canvas.draw()
    buf = np.asarray(fig.canvas.buffer_rgba())
    dx, dy = ax.transData.transform((x, y))
    return buf[int(buf.shape[0] - dy), int(dx), :3].astype(int)


# ---------------------------------------------------------------------------------- limits

def test_symmetric_limit_per_map_is_percentile_of_abs():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 40, 50)) * np.array([1.0, 10.0, 0.1])[:, None, None]
    expected = [np.percentile(np.abs(m).ravel(), 99.5) for m in maps]
    np.testing.assert_allclose(symmetric_limit(maps), expected, rtol=1e-12)
    np.testing.assert_allclose(symmetric_limit(maps, percentile=90),
                               [np.percentile(np.abs(m).ravel(), 90) for m in maps], rtol=1e-12)
    assert float(symmetric_limit(maps[1])) == pytest.approx(expected[1])
    assert np.ndim(symmetric_limit(maps[1])) == 0


def test_symmetric_limit_shared_uses_the_dominant_class():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(4, 30, 30)) * np.array([1.0, 5.0, 0.2, 1.0])[:, None, None]
    dominant = np.percentile(np.abs(maps[1]).ravel(), 99.5)
    np.testing.assert_allclose(symmetric_limit(maps, "shared"), [dominant] * 4, rtol=1e-12)


def test_symmetric_limit_is_zero_safe_and_sparse_safe():
    maps = np.zeros((2, 100, 100))
    maps[1, 3, 4] = -5.0  # one pixel: its 99.5th percentile of |value| is 0
    limits = symmetric_limit(maps)
    assert limits[0] > 0 and np.isfinite(limits[0])
    assert limits[1] == 5.0


def test_symmetric_limit_refuses_nan_and_bad_mode():
    with pytest.raises(ParameterError, match="NaN"):
        symmetric_limit(np.full((4, 4), np.nan))
    with pytest.raises(ParameterError, match="mode"):
        symmetric_limit(np.ones((4, 4)), mode="global")


# ---------------------------------------------------------------------------------- colours

@pytest.mark.parametrize("cmap, low, mid, high", [
    ("bwr", (0, 0, 255), (255, 255, 255), (255, 0, 0)),
    ("coldnhot", (0, 255, 255), (0, 0, 0), (255, 255, 255)),
])
def test_rgb_heatmap_colours_at_minus_zero_plus_limit(cmap, low, mid, high):
    h = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    rgb = rgb_heatmap(h, limit=1.0, cmap=cmap)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    for col, colour in [(0, low), (1, low), (2, mid), (3, high), (4, high)]:
        np.testing.assert_allclose(rgb[0, col], colour, atol=3)  # beyond +-limit: clipped


def test_rgb_heatmap_matches_matplotlib_normalisation():
    rng = np.random.default_rng(2)
    h = rng.normal(size=(20, 20))
    cmap = plt.get_cmap("RdBu_r")
    expected = cmap((np.clip(h / 1.5, -1, 1) + 1) / 2)[..., :3] * 255
    # Both use a 256-entry table; rounding may pick the neighbouring entry.
    step = np.abs(np.diff(cmap(np.linspace(0, 1, 256))[:, :3], axis=0)).max() * 255
    np.testing.assert_allclose(rgb_heatmap(h, 1.5, "RdBu_r"), expected, atol=step + 0.5)


def test_overlay_is_diverging_and_centred_on_zero():
    image = np.full((30, 30), 0.5)
    heat = np.zeros((30, 30))
    heat[:, :10] = -1.0
    heat[:, 20:] = 1.0
    ax = overlay(image, heat, limit=1.0, alpha=0.8, cmap="bwr")
    negative, zero, positive = pixel(ax, 5, 15), pixel(ax, 15, 15), pixel(ax, 25, 15)
    assert negative[2] > negative[0] + 80, f"negative relevance not blue: {negative}"
    assert positive[0] > positive[2] + 80, f"positive relevance not red: {positive}"
    # Zero relevance is transparent: the gray radiograph (0.5 -> 128) shows unchanged.
    np.testing.assert_allclose(zero, [128, 128, 128], atol=3)


def test_overlay_weak_values_are_more_transparent():
    image = np.full((20, 20), 0.5)
    heat = np.zeros((20, 20))
    heat[:, :10] = 0.2
    heat[:, 10:] = 1.0
    ax = overlay(image, heat, limit=1.0, alpha=0.6)
    weak, strong = pixel(ax, 5, 10), pixel(ax, 15, 10)
    # The red tint (red minus blue) grows with |value|; 0.2 of the limit is only a hint of red.
    assert strong[0] - strong[2] > 5 * (weak[0] - weak[2]) > 0


def test_overlay_accepts_normalised_tensor_and_uint8():
    rng = np.random.default_rng(3)
    gray = rng.random((16, 16))
    normalised = (gray[None] - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    ax = overlay(torch.tensor(normalised, dtype=torch.float32), np.zeros((16, 16)), limit=1.0)
    np.testing.assert_allclose(ax.get_images()[0].get_array(), gray, atol=1e-5)
    ax = overlay((gray * 255).astype(np.uint8), np.zeros((16, 16)), limit=1.0)
    np.testing.assert_allclose(ax.get_images()[0].get_array(), gray, atol=1 / 255)
    with pytest.raises(ParameterError, match="image"):
        overlay(gray * 3 - 1, np.zeros((16, 16)))


def test_low_resolution_map_is_upsampled_bilinearly():
    rng = np.random.default_rng(4)
    low = rng.normal(size=(7, 7)).astype(np.float32)
    up = resize_map(low, (56, 56))
    # PIL's bilinear resize with half-pixel centres (the same convention) away from the borders.
    pil = np.asarray(Image.fromarray(low, mode="F").resize((56, 56), Image.BILINEAR))
    np.testing.assert_allclose(up[4:-4, 4:-4], pil[4:-4, 4:-4], atol=1e-5)
    ax = overlay(np.full((56, 56), 0.5), np.where(low > 0, 1.0, -1.0), limit=1.0)
    assert ax.get_images()[1].get_array().shape[:2] == (56, 56)
    # A map that is uniformly negative stays blue wherever it is drawn.
    ax = overlay(np.full((56, 56), 0.5), -np.ones((7, 7)), limit=1.0)
    corner = pixel(ax, 2, 2)
    assert corner[2] > corner[0] + 50


def test_overlay_outline_and_colorbar():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    signed = np.linspace(-1, 1, 400).reshape(20, 20)
    ax = overlay(np.full((20, 20), 0.5), signed, limit=1.0, outline=mask,
                 colorbar=True, title="Edema")
    assert ax.collections, "no outline contour drawn"
    assert len(ax.figure.axes) == 2  # the panel and its colour bar
    bar = ax.figure.axes[1]
    assert bar.get_ylabel() == "relevance" and bar.get_ylim() == (-1.0, 1.0)
    assert ax.get_title() == "Edema"
    assert ax.get_title() and ax.title.get_fontsize() >= bar.get_yticklabels()[0].get_fontsize()


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_blank_maps_say_so_and_get_no_dummy_colour_bar():
    # A map without any non-zero value: the panel says so, and no +-1 colour bar pretends a scale.
    ax = overlay(np.full((20, 20), 0.5), np.zeros((20, 20)), colorbar=True)
    assert _texts(ax) == ["zero everywhere"] and len(ax.figure.axes) == 1
    # Only negative values: drawn (blue), and the panel says there is no positive relevance.
    ax = overlay(np.full((20, 20), 0.5), -np.ones((20, 20)), colorbar=True)
    assert _texts(ax) == ["no positive relevance"] and len(ax.figure.axes) == 2
    ax = overlay(np.full((20, 20), 0.5), np.ones((20, 20)), colorbar=True)
    assert _texts(ax) == []


def test_a_map_that_cannot_be_negative_gets_a_sequential_scale_from_zero():
    cam = np.zeros((20, 20))
    cam[5:10, 5:10] = 2.0
    ax = overlay(np.full((20, 20), 0.5), cam, limit=2.0, colorbar=True)
    bar = ax.figure.axes[1]
    assert bar.get_ylim() == (0.0, 2.0)
    # The strongest value is the sequential map's darkest red, not the diverging map's.
    strongest = ax.images[1].get_array()[7, 7]
    np.testing.assert_allclose(strongest[:3], plt.get_cmap("Reds")(1.0)[:3], atol=1e-6)


# ---------------------------------------------------------------------------------- grids

CLASSES = ["Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion"]


def test_grid_classes_panels_and_titles():
    rng = np.random.default_rng(5)
    maps = rng.normal(size=(5, 16, 16))
    fig = grid_classes(np.full((32, 32), 0.5), maps, CLASSES, scale="per_map",
                       probs=[0.91, 0.1, 0.5, 0.3, 0.77], labels=[1, 0, -1, np.nan, 1],
                       outcomes=["TP", "TN", "FP", "TN", "FN"],
                       outlines={"Cardiomegaly": np.ones((32, 32), bool)})
    panels = heatmap_axes(fig)
    assert len(panels) == 5
    assert len(fig.axes) == 10  # per-map scale: one colour bar per panel
    titles = [ax.get_title() for ax in panels]
    for name, title in zip(CLASSES, titles):
        assert title.startswith(name)
    assert "p=0.91" in titles[0] and "TP" in titles[0] and "positive" in titles[0]
    assert "uncertain" in titles[2] and "blank" in titles[3] and "FN" in titles[4]


def test_grid_classes_shared_scale_fades_weak_classes():
    rng = np.random.default_rng(6)
    maps = rng.normal(size=(2, 16, 16)) * np.array([10.0, 1.0])[:, None, None]
    image = np.full((16, 16), 0.5)
    shared = grid_classes(image, maps, CLASSES[:2], scale="shared", alpha=0.6)
    assert len(shared.axes) == 3  # two panels, one colour bar
    strongest = [ax.get_images()[1].get_array()[..., 3].max() for ax in heatmap_axes(shared)]
    assert strongest[0] == pytest.approx(0.6) and strongest[1] < 0.15
    per_map = grid_classes(image, maps, CLASSES[:2], scale="per_map", alpha=0.6)
    strongest = [ax.get_images()[1].get_array()[..., 3].max() for ax in heatmap_axes(per_map)]
    assert strongest == pytest.approx([0.6, 0.6])


def test_grid_classes_refuses_mismatched_names():
    with pytest.raises(ParameterError, match="class_names"):
        grid_classes(np.zeros((8, 8)), np.zeros((3, 8, 8)), CLASSES[:2])


def test_grid_methods_one_panel_per_method():
    rng = np.random.default_rng(7)
    maps = {"EpsilonPlusFlat": rng.normal(size=(32, 32)),
            "EpsilonGammaBox": rng.normal(size=(32, 32)),
            "Grad-CAM": np.abs(rng.normal(size=(4, 4)))}  # low resolution, upsampled
    fig = grid_methods(np.full((32, 32), 0.5), maps, "Edema")
    panels = heatmap_axes(fig)
    assert [ax.get_title() for ax in panels] == list(maps)
    assert fig._suptitle.get_text() == "Edema"
    assert all(ax.get_images()[1].get_array().shape[:2] == (32, 32) for ax in panels)


def test_grid_images_layout():
    rng = np.random.default_rng(8)
    images = [rng.random((24, 24)) for _ in range(5)]
    maps = rng.normal(size=(5, 24, 24))
    titles = ["TP 1", "TP 2", "FP 1", "FN 1", "FN 2"]
    fig = grid_images(images, maps, titles, scale="shared", columns=3)
    panels = heatmap_axes(fig)
    assert [ax.get_title() for ax in panels] == titles
    assert len(fig.axes) == 6  # five panels, one shared colour bar; the sixth slot is removed
    with pytest.raises(ParameterError, match="titles"):
        grid_images(images, maps, titles[:2])


def test_rgb_grid_has_labelled_colour_bars_the_outline_and_display_names():
    from chexlib.plots.galleries import rgb_grid

    maps = {"epsilon": np.linspace(-1, 1, 400).reshape(20, 20), "gradcam": np.ones((20, 20))}
    outline = np.zeros((20, 20), bool)
    outline[5:10, 5:10] = True
    fig = rgb_grid(maps, outline=outline)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["LRP-ε", "Grad-CAM"]
    assert all(ax.collections for ax in panels)  # the outline's contour
    bars = [ax for ax in fig.axes if ax.get_ylabel() == "relevance"]
    assert len(bars) == 2
