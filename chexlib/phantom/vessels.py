"""Pulmonary vascular markings: branching trees from each hilum.

The tree is grown once per patient (from ``Patient.vessel_seed``) in lung-box units, so every
study of a patient shows the same branching pattern, placed at that study's hila and scale.
Branches thin and fade towards the periphery, where normal lung shows almost no markings; the
"Pneumothorax" finding relies on this texture: beyond the pleural line it is absent.
"""

from __future__ import annotations

import numpy as np

from chexlib.phantom import draw
from chexlib.phantom.anatomy import Scene

#: Tree growth (lung-box units): trunks per lung, step length, turning noise, branching rate.
TRUNKS = 11
STEP = 0.045
TURN = 0.09
BRANCH_P = 0.35
MAX_STEPS = 11


def grow_tree(seed: int, side: str) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Grow a vessel tree from the hilum at the origin.

    Parameters
    ----------
    seed : int
        The patient's vessel seed.
    side : {"R", "L"}
        Which lung; the tree grows laterally (towards -x for "R").

    Returns
    -------
    list of (start [2], end [2], width)
        Segments in lung-box units (x in box widths, y in box heights), width in relative units
        (1 = a hilar trunk).
    """
    rng = np.random.default_rng([seed, 0 if side == "R" else 1])
    lateral = -1.0 if side == "R" else 1.0
    # Angles measured from straight down (0) through lateral (pi/2) to straight up (pi); the
    # lower lobes hold more vessels, so more trunks point down.
    angles = np.sort(rng.uniform(0.1, 0.92, TRUNKS) ** 0.9) * np.pi
    pos = np.zeros((TRUNKS, 2))
    ang = angles.copy()
    width = rng.uniform(0.8, 1.0, TRUNKS)
    segments = []
    for _ in range(MAX_STEPS):
        if len(pos) == 0:
            break
        step = STEP * rng.uniform(0.7, 1.3, len(pos)) * (0.6 + 0.4 * width)
        ang = ang + rng.normal(0.0, TURN, len(pos))
        direction = np.stack([lateral * np.sin(ang), -np.cos(ang)], axis=1)
        new = pos + step[:, None] * direction
        segments.extend(zip(pos, new, width))
        # Branch: a daughter leaves at an angle; both continue thinner.
        split = rng.random(len(pos)) < BRANCH_P
        child_ang = ang[split] + rng.choice([-1.0, 1.0], split.sum()) * rng.uniform(
            0.3, 0.7, split.sum()
        )
        pos = np.concatenate([new, new[split]])
        ang = np.concatenate([ang, child_ang])
        width = np.concatenate([width * 0.9, width[split] * 0.7])
        width[: len(split)][split] *= 0.85
        alive = (width > 0.2) & (np.hypot(pos[:, 0], pos[:, 1] * 0.8) < 0.5)
        pos, ang, width = pos[alive], ang[alive], width[alive]
    return segments


def vessel_layer(scene: Scene) -> np.ndarray:
    """Rasterise both trees at this study's hila; hilar shadows included.

    Returns
    -------
    ndarray float32, shape [H, W], 0..1
    """
    starts, ends, widths, values = [], [], [], []
    for side in ("R", "L"):
        segs = grow_tree(scene.patient.vessel_seed, side)
        a = np.array([seg[0] for seg in segs])
        b = np.array([seg[1] for seg in segs])
        w = np.array([seg[2] for seg in segs])
        origin = np.array(scene.hilum[side])
        size = np.array([scene.box_w, scene.box_h])
        starts.append(a * size + origin)
        ends.append(b * size + origin)
        widths.append(0.6 + 4.2 * w**1.5)
        # Markings fade towards the periphery: the outer third of a normal lung is almost clear.
        values.append(np.clip(0.9 - 1.3 * np.hypot(b[:, 0], b[:, 1]), 0.1, 1.0) * (0.5 + 0.5 * w))
    layer = draw.segments(
        scene.shape,
        np.concatenate(starts),
        np.concatenate(ends),
        np.concatenate(widths),
        np.concatenate(values),
    )
    # Hilar shadows: the pulmonary arteries at the hila, lateral to the mediastinum.
    for side, s in (("R", -1.0), ("L", 1.0)):
        hx, hy = scene.hilum[side]
        r = draw.ellipse(
            scene.yy,
            scene.xx,
            hy,
            hx + s * 0.02 * scene.box_w,
            0.07 * scene.box_h,
            0.035 * scene.box_w,
        )
        layer = np.maximum(layer, 0.8 * draw.smoothstep((1.0 - r) / 0.5))
    return draw.blur(layer, 0.6)
