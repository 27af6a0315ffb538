"""The planted chest drain: a confounder of pneumothorax with its own ground-truth mask.

In real chest radiographs a pneumothorax that has been treated carries an intercostal chest
drain, and a model can learn the drain instead of the air (Oakden-Rayner et al. 2020, "Hidden
stratification causes clinically meaningful failures in machine learning for medical imaging").
The phantom draws such a drain on a chosen share of its pneumothorax images (and rarely on
others; :func:`chexlib.phantom.sampling.sample_drains`), so the confounder's strength is known and
its pixels are known.

The drain is drawn *after* the radiograph is composed and the marker burned in, with its own
random stream (:func:`drain_rng`): rendering the same image without it changes exactly the
pixels of its mask and nothing else, which makes the causal test of notebook 07 a clean
counterfactual (no inpainting). It enters through the lateral chest wall at the level of the
5th-7th intercostal space (the "triangle of safety"), runs medially and curves up towards the
apex, as drains for air are placed; its radio-opaque stripe has a gap at the side holes.
"""

from __future__ import annotations

import numpy as np

from chexlib.phantom import draw
from chexlib.phantom.anatomy import Scene

#: Brightness of the tube's wall and of its radio-opaque stripe (0..1, added to the image).
DRAIN_WALL_BRIGHTNESS = 0.18
DRAIN_STRIPE_BRIGHTNESS = 0.55
#: Outer width and stripe width in pixels at the 320-pixel-high frame (a 24-28 Fr drain).
DRAIN_WIDTH = 5.0
DRAIN_STRIPE_WIDTH = 1.6


def drain_rng(seed: int, image_number: int) -> np.random.Generator:
    """The drain's own random stream: drawing it or not leaves every other draw unchanged."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_number)],
                                                        spawn_key=(3,)))


def drain_side(masks: dict, scene: Scene, rng: np.random.Generator) -> str:
    """The side of the pneumothorax where there is one ("R" = image left), else a random side."""
    region = masks.get("Pneumothorax")
    if region is not None and region.any():
        return "R" if float(np.mean(np.flatnonzero(region.any(axis=0)))) < scene.mid else "L"
    return "R" if rng.random() < 0.5 else "L"


def drain_path(scene: Scene, side: str, rng: np.random.Generator) -> np.ndarray:
    """The drain's centre line, (x, y) points from outside the body to the tip near the apex."""
    lung = scene.lung(side)
    rows = np.flatnonzero(lung.any(axis=1))
    if len(rows) < 10:  # a lung always exists; this keeps a degenerate scene drawable
        lung = scene.lungs() if scene.lungs().any() else np.ones(scene.shape, bool)
        rows = np.flatnonzero(lung.any(axis=1))
    first, last = draw.row_extent(lung)
    top, bottom = float(rows[0]), float(rows[-1])
    out = -1.0 if side == "R" else 1.0  # direction from the lung towards the chest wall

    def lateral(y: float, depth: float) -> float:
        """x at ``depth`` (0 = the lateral edge, 1 = the medial edge) of the lung's row ``y``."""
        row = int(np.clip(round(y), rows[0], rows[-1]))
        edge, far = (first[row], last[row]) if side == "R" else (last[row], first[row])
        return float(edge + (far - edge) * depth)

    entry_y = top + (bottom - top) * rng.uniform(0.55, 0.68)
    mid_y = top + (bottom - top) * rng.uniform(0.3, 0.4)
    tip_y = top + (bottom - top) * rng.uniform(0.08, 0.16)
    edge = lateral(entry_y, 0.0)
    skin = (edge + out * rng.uniform(12.0, 18.0), entry_y + rng.uniform(6.0, 12.0))
    inside = draw.bezier(np.array([
        skin,
        (lateral(entry_y, 0.12), entry_y - rng.uniform(2.0, 6.0)),
        (lateral(mid_y, rng.uniform(0.2, 0.3)), mid_y),
        (lateral(tip_y, rng.uniform(0.35, 0.55)), tip_y),
    ]), n=40)
    outside = draw.bezier(np.array([(skin[0] + out * 45.0, skin[1] + 30.0),
                                    (skin[0] + out * 15.0, skin[1] + 4.0), skin]), n=12)
    return np.concatenate([outside, inside[1:]])


def draw_drain(image: np.ndarray, scene: Scene, masks: dict,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Add a chest drain to a composed radiograph.

    Parameters
    ----------
    image : ndarray float32 [H, W], 0..1
    scene : Scene
    masks : dict observation -> bool mask
        The drawn findings (the drain goes to the pneumothorax's side).
    rng : numpy Generator
        :func:`drain_rng` of the image.

    Returns
    -------
    image : ndarray float32 [H, W]
        The radiograph with the drain; identical to ``image`` outside ``mask``.
    mask : ndarray bool [H, W]
        Every pixel the drain changes (the confounder's ground truth).
    """
    side = drain_side(masks, scene, rng)
    path = drain_path(scene, side, rng)
    wall = draw.polylines(scene.shape, [(path, DRAIN_WIDTH, 1.0)])
    # The stripe stops short of the tip and has a gap at the side holes (the "sentinel eye").
    cut = int(len(path) * rng.uniform(0.72, 0.8))
    stripe = draw.polylines(scene.shape, [(path[:cut], DRAIN_STRIPE_WIDTH, 1.0),
                                          (path[cut + 3:-2], DRAIN_STRIPE_WIDTH, 1.0)])
    stripe_extra = DRAIN_STRIPE_BRIGHTNESS - DRAIN_WALL_BRIGHTNESS
    added = DRAIN_WALL_BRIGHTNESS * wall + stripe_extra * stripe
    mask = added > 0
    out = image.copy()
    out[mask] = np.clip(image[mask] + added[mask], 0.0, 1.0)
    return out, mask
