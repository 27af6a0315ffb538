"""Bones of the phantom: ribs, clavicles, spine, scapulae and humeral heads.

Each bone is a polyline or polygon handed to PIL's rasteriser (:mod:`chexlib.phantom.draw`).
Ribs are kept as :class:`Rib` polylines in the scene until the image is composed, so that the
"Fracture" finding can break one (a gap and a step) before it is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chexlib.phantom import draw
from chexlib.phantom.anatomy import HEIGHT, Scene

#: Brightness of bone relative to each other (the renderer scales the whole layer).
POSTERIOR_RIB = 0.75
ANTERIOR_RIB = 0.5
CLAVICLE = 1.0
SPINE = 0.3
SCAPULA = 0.3
HUMERUS = 0.9
#: Posterior ribs visible between the apex and the diaphragm at full inspiration.
RIBS_PER_LUNG = 9.6


@dataclass
class Rib:
    """One rib: the posterior arc (strong) or the anterior part (faint) of one side.

    ``points`` is [K, 2] (x, y) pixels from the medial to the lateral end (posterior) or from the
    lateral to the medial end (anterior); ``width`` in pixels.
    """

    points: np.ndarray
    width: float
    value: float
    side: str  # "R" (image left) or "L"
    level: int  # 1 = first rib
    posterior: bool


@dataclass
class RibBreak:
    """A fracture: rib ``index`` into ``scene.ribs``, broken at fraction ``at`` of its length."""

    index: int
    at: float
    gap: float  # pixels
    step: tuple[float, float]  # (dx, dy) shift of the distal fragment


def rib_spacing(scene: Scene) -> float:
    """Vertical distance between consecutive posterior ribs (pixels)."""
    return scene.box_h / scene.study.inspiration / RIBS_PER_LUNG


def lateral_edge(scene: Scene, side: str, y: float) -> float:
    """x of the lateral border of a hemithorax at height y (nearest row with lung if none)."""
    key = "edge_" + side
    if key not in scene.cache:  # one row scan per side, shared by all ribs
        lung = scene.lung_r if side == "R" else scene.lung_l
        first, last = draw.row_extent(lung)
        scene.cache[key] = first if side == "R" else last
    edge = scene.cache[key]
    rows = np.flatnonzero(np.isfinite(edge))
    if len(rows) == 0:
        return scene.mid + (-1 if side == "R" else 1) * scene.box_w / 2
    row = int(np.clip(round(y), rows[0], rows[-1]))
    row = rows[np.argmin(np.abs(rows - row))]
    return float(edge[row])


def make_ribs(scene: Scene) -> list[Rib]:
    """Posterior and anterior ribs of both sides, attached to the patient (same across studies
    up to positioning): rib k leaves the spine at ``top + (k - 1.4 + phase) * spacing``."""
    spacing = rib_spacing(scene)
    ribs = []
    for side, s in (("R", -1.0), ("L", 1.0)):
        for level in range(1, 12):
            y0 = scene.top + (level - 1.5 + scene.patient.rib_phase) * spacing
            x_spine = scene.mid + s * 0.05 * scene.box_w
            x_lat = lateral_edge(scene, side, y0 + 0.8 * spacing) + s * 0.025 * scene.box_w
            reach = abs(x_lat - x_spine)
            posterior = draw.bezier(
                np.array(
                    [
                        (x_spine, y0),
                        (x_spine + s * 0.4 * reach, y0 - 1.1 * spacing),
                        (x_lat + s * 0.12 * reach, y0 - 0.2 * spacing),
                        (x_lat - s * 0.03 * reach, y0 + 1.9 * spacing),
                    ]
                ),
                n=28,
            )
            width = spacing * (0.32 if level == 1 else 0.4)
            ribs.append(Rib(posterior, width, POSTERIOR_RIB, side, level, True))
            anterior = draw.bezier(
                np.array(
                    [
                        posterior[-1],
                        (x_lat - s * 0.2 * reach, y0 + 2.2 * spacing),
                        (x_spine + s * 0.4 * reach, y0 + 3.0 * spacing),
                    ]
                ),
                n=18,
            )
            ribs.append(Rib(anterior, spacing * 0.55, ANTERIOR_RIB, side, level, False))
    return ribs


def rib_point(rib: Rib, at: float) -> np.ndarray:
    """(x, y) of the point at fraction ``at`` along a rib polyline."""
    index = at * (len(rib.points) - 1)
    i = int(np.floor(index))
    j = min(i + 1, len(rib.points) - 1)
    return rib.points[i] + (index - i) * (rib.points[j] - rib.points[i])


def _rib_pieces(scene: Scene) -> list[tuple[np.ndarray, float, float]]:
    """Rib polylines with the fractures applied: a broken rib becomes two offset fragments."""
    breaks = {b.index: b for b in scene.rib_breaks}
    pieces = []
    for i, rib in enumerate(scene.ribs):
        if i not in breaks:
            pieces.append((rib.points, rib.width, rib.value))
            continue
        brk = breaks[i]
        pts = rib.points
        lengths = np.r_[0, np.cumsum(np.hypot(*np.diff(pts, axis=0).T))]
        cut = brk.at * lengths[-1]
        head = np.vstack(
            [pts[lengths < cut - brk.gap / 2], rib_point(rib, (cut - brk.gap / 2) / lengths[-1])]
        )
        tail = np.vstack(
            [rib_point(rib, (cut + brk.gap / 2) / lengths[-1]), pts[lengths > cut + brk.gap / 2]]
        )
        pieces.append((head, rib.width, rib.value))
        pieces.append((tail + np.asarray(brk.step), rib.width, rib.value))
    return pieces


def bone_layer(scene: Scene) -> np.ndarray:
    """All bones of the scene, cortex brighter than marrow.

    Returns
    -------
    ndarray float32, shape [H, W], about 0..1
    """
    shape = scene.shape
    pieces = _rib_pieces(scene) + _clavicles(scene)
    outer = draw.polylines(shape, pieces)
    inner = draw.polylines(shape, [(p, max(w - 3.0, 1.0), v) for p, w, v in pieces])
    bones = outer - 0.45 * inner  # a tube of bone: the cortex at the edges shows brighter
    bones = np.maximum(bones, _spine(scene))
    bones = np.maximum(bones, _shoulders(scene))
    return bones


def _clavicles(scene: Scene) -> list[tuple[np.ndarray, float, float]]:
    """S-shaped clavicles; projected higher and flatter on AP films."""
    ap = scene.study.view == "AP"
    y0 = scene.top + (0.02 if ap else 0.12) * scene.box_h
    out = []
    for s in (-1.0, 1.0):
        pts = draw.bezier(
            np.array(
                [
                    (scene.mid + s * 0.05 * scene.box_w, y0),
                    (scene.mid + s * 0.22 * scene.box_w, y0 + 0.04 * HEIGHT),
                    (scene.mid + s * 0.40 * scene.box_w, y0 - (0.03 if ap else 0.08) * HEIGHT),
                    (scene.mid + s * 0.60 * scene.box_w, y0 - (0.04 if ap else 0.09) * HEIGHT),
                ]
            ),
            n=24,
        )
        out.append((pts, 0.045 * scene.box_w, CLAVICLE))
    return out


def _spine(scene: Scene) -> np.ndarray:
    """Vertebral bodies with their pedicles, stacked along the midline."""
    spacing = rib_spacing(scene)
    w = 0.055 * scene.box_w
    shapes_body, shapes_ped = [], []
    y = scene.top - 4 * spacing
    while y < HEIGHT + spacing:
        h = spacing * 0.78
        x0, x1 = scene.mid - w, scene.mid + w
        shapes_body.append((np.array([(x0, y), (x1, y), (x1 + 1, y + h), (x0 - 1, y + h)]), SPINE))
        for s in (-1, 1):
            px = scene.mid + s * w * 0.8
            t = np.linspace(0, 2 * np.pi, 12)
            ped = np.stack([px + 0.22 * w * np.cos(t), y + 0.35 * h + 0.3 * h * np.sin(t)], axis=1)
            shapes_ped.append((ped, SPINE * 1.4))
        y += spacing
    layer = draw.polygons(scene.shape, shapes_body)
    return np.maximum(layer, draw.polygons(scene.shape, shapes_ped))


def _shoulders(scene: Scene) -> np.ndarray:
    """Scapulae (over the lungs on AP films, rotated out of them on PA films) and humeral heads."""
    ap = scene.study.view == "AP"
    shapes = []
    lines = []
    for side, s in (("R", -1.0), ("L", 1.0)):
        edge = lateral_edge(scene, side, scene.top + 0.25 * scene.box_h)
        x_med = edge - s * (0.08 if ap else -0.06) * scene.box_w
        glenoid = (edge + s * 0.13 * scene.box_w, scene.top + 0.04 * scene.box_h)
        tip = (x_med + s * 0.03 * scene.box_w, scene.top + (0.55 if ap else 0.5) * scene.box_h)
        superior = (x_med, scene.top - 0.02 * scene.box_h)
        shapes.append((np.array([superior, glenoid, tip]), SCAPULA))
        lines.append((np.array([superior, tip]), 3.0, SCAPULA * 1.5))
        if ap:  # arms hang beside the chest: humeral head and shaft at the film edge
            head_x = edge + s * 0.19 * scene.box_w
            head_y = scene.top - 0.01 * HEIGHT
            r = 0.09 * scene.box_w
            t = np.linspace(0, 2 * np.pi, 24)
            shapes.append(
                (np.stack([head_x + r * np.cos(t), head_y + r * np.sin(t)], axis=1), HUMERUS)
            )
            lines.append(
                (
                    np.array([(head_x, head_y), (head_x + s * 0.04 * scene.box_w, HEIGHT)]),
                    0.07 * scene.box_w,
                    HUMERUS * 0.8,
                )
            )
    layer = draw.polygons(scene.shape, shapes)
    return np.maximum(layer, draw.polylines(scene.shape, lines))
