"""Findings drawn on top of the anatomy: support devices (tubes, lines, pacemaker, ECG leads) and
rib fractures. Same signature as :mod:`chexlib.phantom.findings`: ``draw(scene, rng, strength)
-> bool mask``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from chexlib.phantom import draw
from chexlib.phantom.anatomy import HEIGHT, Scene
from chexlib.phantom.skeleton import RibBreak, rib_point

#: Brightness added by a tube's radio-opaque stripe and by metal (pacemaker, electrodes).
TUBE_BRIGHTNESS = 0.45
METAL_BRIGHTNESS = 0.9
#: Fracture: gap (pixels) and step (pixels) between the fragments at full strength.
FRACTURE_GAP = (5.0, 8.0)
FRACTURE_STEP = (3.0, 6.0)


def draw_fracture(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Break the lateral arc of a mid-thoracic posterior rib: a gap and a step between fragments."""
    candidates = [i for i, rib in enumerate(scene.ribs) if rib.posterior and 3 <= rib.level <= 8]
    index = int(rng.choice(candidates))
    rib = scene.ribs[index]
    at = float(rng.uniform(0.45, 0.75))
    gap = rng.uniform(*FRACTURE_GAP) * (0.5 + 0.5 * strength)
    step = rng.uniform(*FRACTURE_STEP, size=2) * rng.choice([-1.0, 1.0], size=2) * strength
    scene.rib_breaks.append(
        RibBreak(index=index, at=at, gap=gap, step=(float(step[0]), float(step[1])))
    )
    x, y = rib_point(rib, at)
    radius = rib.width * 1.1 + gap
    return draw.ellipse(scene.yy, scene.xx, y, x, radius, radius) < 1.0


def _et_tube(scene: Scene, rng: np.random.Generator) -> list:
    """Endotracheal tube: down the trachea, tip a few centimetres above the carina."""
    x = scene.mid - 0.01 * scene.box_w + rng.normal(0, 1.5)
    tip = scene.top + rng.uniform(0.12, 0.24) * scene.box_h
    return [(np.array([(x, -2.0), (x + rng.normal(0, 2), tip)]), 2.0, 1.0)]


def _central_line(scene: Scene, rng: np.random.Generator) -> list:
    """Central venous catheter from the neck or a subclavian vein into the superior vena cava."""
    s = rng.choice([-1.0, 1.0], p=[0.7, 0.3])
    start = (scene.mid + s * scene.box_w * rng.uniform(0.15, 0.35), -2.0)
    pts = draw.bezier(
        np.array(
            [
                start,
                (scene.mid + s * 0.12 * scene.box_w, scene.top + 0.05 * scene.box_h),
                (scene.mid - 0.06 * scene.box_w, scene.top + 0.2 * scene.box_h),
                (scene.mid - 0.05 * scene.box_w, scene.top + rng.uniform(0.32, 0.45) * scene.box_h),
            ]
        ),
        n=20,
    )
    return [(pts, 1.6, 0.9)]


def _ng_tube(scene: Scene, rng: np.random.Generator) -> list:
    """Nasogastric tube: down the oesophagus, through the diaphragm into the stomach."""
    floor = float(scene.dome[int(np.clip(scene.mid, 0, len(scene.dome) - 1))])
    pts = draw.bezier(
        np.array(
            [
                (scene.mid + 0.01 * scene.box_w, -2.0),
                (scene.mid + 0.02 * scene.box_w, floor * 0.7),
                (scene.mid + 0.02 * scene.box_w, floor + 0.1 * scene.box_h),
                (
                    scene.mid + rng.uniform(0.15, 0.25) * scene.box_w,
                    min(floor + 0.12 * scene.box_h, HEIGHT - 4),
                ),
            ]
        ),
        n=24,
    )
    return [(pts, 1.8, 0.85)]


def _pacemaker(scene: Scene, rng: np.random.Generator) -> tuple[list, list]:
    """Generator box below the left clavicle with leads curving through the SVC into the heart."""
    gx = scene.mid + rng.uniform(0.28, 0.38) * scene.box_w
    gy = scene.top + rng.uniform(0.05, 0.15) * scene.box_h
    w, h = scene.box_w * 0.07, scene.box_w * 0.05
    t = np.linspace(0, 2 * np.pi, 20)
    box = np.stack(
        [
            gx + w * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.3,
            gy + h * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.3,
        ],
        axis=1,
    )
    floor = float(scene.dome[int(np.clip(scene.mid, 0, len(scene.dome) - 1))])
    leads = []
    for k in range(int(rng.integers(1, 3))):
        end = (scene.mid + (0.12 + 0.06 * k) * scene.box_w, floor - (0.06 + 0.12 * k) * scene.box_h)
        pts = draw.bezier(
            np.array(
                [
                    (gx - w, gy),
                    (scene.mid + 0.02 * scene.box_w, gy - 0.05 * scene.box_h),
                    (scene.mid - 0.08 * scene.box_w, scene.top + 0.45 * scene.box_h),
                    end,
                ]
            ),
            n=24,
        )
        leads.append((pts, 1.6, 0.9))
    return [(box, 1.0)], leads


def _ecg_leads(scene: Scene, rng: np.random.Generator) -> tuple[list, list]:
    """Skin electrodes (rings with a metal snap) and their wires."""
    rings, wires = [], []
    for _ in range(int(rng.integers(2, 5))):
        x = scene.mid + rng.uniform(-0.55, 0.55) * scene.box_w
        y = scene.top + rng.uniform(-0.05, 0.6) * scene.box_h
        t = np.linspace(0, 2 * np.pi, 16)
        rings.append((np.stack([x + 5 * np.cos(t), y + 5 * np.sin(t)], axis=1), 0.35))
        rings.append((np.stack([x + 2 * np.cos(t), y + 2 * np.sin(t)], axis=1), 1.0))
        end = (x + rng.normal(0, 40), -2.0 if rng.random() < 0.5 else HEIGHT + 2.0)
        mid = ((x + end[0]) / 2 + rng.normal(0, 20), (y + end[1]) / 2)
        wires.append((draw.bezier(np.array([(x, y), mid, end]), n=16), 1.0, 0.5))
    return rings, wires


_DEVICES = {"et_tube": 0.35, "central_line": 0.3, "ng_tube": 0.2, "pacemaker": 0.15, "ecg": 0.25}


def draw_support_devices(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """One to three devices: ET tube, central line, NG tube, pacemaker with leads, ECG electrodes.

    A faint (uncertain) finding draws one device, less radio-opaque.
    """
    names = list(_DEVICES)
    p = np.array(list(_DEVICES.values()))
    count = 1 if strength < 1.0 else int(rng.integers(1, 4))
    chosen = rng.choice(names, size=count, replace=False, p=p / p.sum())
    lines, shapes = [], []
    for name in chosen:
        if name == "et_tube":
            lines += _et_tube(scene, rng)
        elif name == "central_line":
            lines += _central_line(scene, rng)
        elif name == "ng_tube":
            lines += _ng_tube(scene, rng)
        elif name == "pacemaker":
            box, leads = _pacemaker(scene, rng)
            shapes += box
            lines += leads
        else:
            rings, wires = _ecg_leads(scene, rng)
            shapes += rings
            lines += wires
    layer = draw.polylines(scene.shape, lines)
    if shapes:
        layer = np.maximum(layer, draw.polygons(scene.shape, shapes))
    scene.layers["extra"] += (
        (TUBE_BRIGHTNESS + (METAL_BRIGHTNESS - TUBE_BRIGHTNESS) * (layer > 0.95))
        * layer
        * (0.6 + 0.4 * strength)
    )
    mask = ndimage.binary_dilation(layer > 0.25, iterations=1)
    if not mask.any():
        mask = draw.ellipse(scene.yy, scene.xx, scene.top, scene.mid, 4, 4) < 1.0
    return mask
