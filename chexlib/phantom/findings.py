"""One drawing function per CheXpert observation, and the registry that maps names to them.

Every function has the signature ``draw(scene, rng, strength) -> mask``: it changes the scene
(the lung's air content, added density, the heart or mediastinum masks, the ribs) where and how a
radiologist would look for the finding, and returns the finding's ground-truth mask, bool [H, W]
and never empty. ``strength`` is 1.0 for a positive finding and
:data:`chexlib.phantom.sampling.FAINT_STRENGTH` for a faint (uncertain) one.

The registry :data:`FINDINGS` is ordered: findings that move anatomy (mediastinum, heart, pleural
fluid) come before those that are drawn into the lungs that remain.

Densities are module constants so a later calibration can set the difficulty: a density d
replaces the fraction d of the lung's air by soft tissue (1.0 = as white as the heart).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from chexlib.phantom import draw
from chexlib.phantom.anatomy import Scene
from chexlib.phantom.devices import draw_fracture, draw_support_devices

#: Fraction of lung air replaced by fluid / tissue at full strength.
DENSITY = {
    "Lung Opacity": 0.55,
    "Lung Lesion": 0.8,
    "Edema": 0.4,
    "Consolidation": 0.75,
    "Pneumonia": 0.55,
    "Atelectasis": 0.95,
    "Pleural Effusion": 0.85,
    "Pleural Other": 0.85,
}
#: Cardiothoracic ratio added above 0.5 by cardiomegaly, times the strength (then uniform in range).
CARDIOMEGALY_CTR_EXCESS = (0.07, 0.15)
#: Widening of the upper mediastinum by an enlarged cardiomediastinum, times the strength.
MEDIASTINUM_WIDENING = (0.4, 0.7)
#: Extra lucency beyond the pleural line of a pneumothorax (air without lung tissue).
PNEUMOTHORAX_LUCENCY = 0.3
#: Brightness of the visceral pleural line, Kerley lines and calcified plaques.
PLEURAL_LINE = 0.12
KERLEY_LINES = 0.07


def _side(rng: np.random.Generator, p_right: float = 0.5) -> str:
    return "R" if rng.random() < p_right else "L"


def _rows(mask: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    return (int(rows[0]), int(rows[-1])) if len(rows) else (0, mask.shape[0] - 1)


def _zone(scene: Scene, side: str, lo: float, hi: float) -> np.ndarray:
    """The part of a visible lung between fractions lo..hi of its height (0 = apex)."""
    lung = scene.lung(side)
    top, bottom = _rows(lung)
    y = scene.yy
    return lung & (y >= top + lo * (bottom - top)) & (y <= top + hi * (bottom - top))


def _pick(mask: np.ndarray, rng: np.random.Generator, fallback: np.ndarray) -> tuple[float, float]:
    """A random (y, x) pixel of ``mask`` (of ``fallback`` if ``mask`` is empty)."""
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        idx = np.flatnonzero(fallback)
    if len(idx) == 0:
        return mask.shape[0] / 2, mask.shape[1] / 2
    i = int(idx[rng.integers(len(idx))])
    return float(i // mask.shape[1]), float(i % mask.shape[1])


def _blob(
    scene: Scene,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    ry: float,
    rx: float,
    ragged: float,
    edge: float = 0.3,
) -> np.ndarray:
    """Soft blob (0..1): an ellipse whose outline is pushed in and out by smooth noise."""
    r = draw.ellipse(scene.yy, scene.xx, cy, cx, ry, rx, angle=rng.uniform(-0.5, 0.5))
    field = 1.0 - r + ragged * draw.noise(rng, scene.shape, max(min(rx, ry) * 0.6, 3.0), octaves=2)
    return draw.smoothstep(field / edge)


def _opacify(scene: Scene, soft: np.ndarray, density: float) -> None:
    """Replace the fraction ``density * soft`` of the lung's air by fluid or tissue."""
    scene.layers["air"] *= 1.0 - np.clip(density * soft, 0.0, 1.0)


def _mask(soft: np.ndarray, region: np.ndarray, scene: Scene, cy: float, cx: float) -> np.ndarray:
    """Ground truth: where the finding is at least half-strength, inside ``region``.

    Never empty: should a finding end up below half-strength everywhere (tiny, clipped by the
    lung's edge), a small disc at its centre marks it.
    """
    mask = (soft >= 0.5) & region
    if not mask.any():
        disc = draw.ellipse(scene.yy, scene.xx, cy, cx, 4, 4) < 1.0
        mask = disc & region if (disc & region).any() else disc
    return mask


def draw_enlarged_cardiomediastinum(
    scene: Scene, rng: np.random.Generator, strength: float
) -> np.ndarray:
    """Widened upper mediastinum (mass, aortic unfolding, lymph nodes)."""
    low, high = MEDIASTINUM_WIDENING
    scene.set_mediastinum(1.0 + strength * rng.uniform(low, high))
    heart_top = _rows(scene.heart)[0]
    upper = (scene.yy >= scene.top + 0.05 * scene.box_h) & (scene.yy < heart_top)
    return _mask(
        scene.mediastinum.astype(np.float32), upper, scene, scene.top + 0.3 * scene.box_h, scene.mid
    )


def draw_cardiomegaly(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Enlarged heart: cardiothoracic ratio above 0.5 (a faint one just above)."""
    low, high = CARDIOMEGALY_CTR_EXCESS
    scene.set_heart(0.5 + strength * rng.uniform(low, high))
    return scene.heart.copy()


def draw_pleural_effusion(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Basal fluid with a meniscus: higher laterally, blunting the costophrenic angle."""
    sides = ("R", "L") if rng.random() < 0.35 else (_side(rng),)
    masks = []
    for side in sides:
        hemithorax = (scene.lung_r if side == "R" else scene.lung_l) & ~scene.mediastinum
        top, bottom = _rows(hemithorax)
        first, last = draw.row_extent(hemithorax)
        lat_x, med_x = (
            (np.nanmin(first), np.nanmax(last))
            if side == "R"
            else (np.nanmax(last), np.nanmin(first))
        )
        # Fluid fills the costophrenic recess first and climbs the lateral chest wall (meniscus);
        # a moderate effusion hides the hemidiaphragm.
        height = (bottom - top) * strength * rng.uniform(0.3, 0.55)
        lateral = np.clip((scene.xx - med_x) / (lat_x - med_x), 0.0, 1.0)
        surface = bottom - height * (0.45 + 0.55 * lateral**3)
        soft = draw.smoothstep((scene.yy - surface) / 10.0) * hemithorax
        _opacify(scene, soft, DENSITY["Pleural Effusion"] * (0.6 + 0.4 * strength))
        masks.append(_mask(soft, hemithorax, scene, bottom - 3, (lat_x + med_x) / 2))
    return np.logical_or.reduce(masks)


def draw_pneumothorax(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Air between chest wall and collapsed lung: a thin pleural line, no lung markings beyond."""
    side = _side(rng)
    lung = scene.lung(side)
    top, bottom = _rows(lung)
    inside = ndimage.distance_transform_edt(lung)
    depth = scene.box_w * strength * rng.uniform(0.03, 0.08)
    lung_cx = float(np.mean(np.flatnonzero(lung.any(axis=0)))) if lung.any() else scene.mid
    lateral = (scene.xx < lung_cx) if side == "R" else (scene.xx > lung_cx)
    extent = top + (bottom - top) * rng.uniform(0.5, 0.8)
    region = (
        lung
        & (inside <= depth)
        & (lateral | (scene.yy < top + 0.2 * (bottom - top)))
        & (scene.yy < extent)
    )
    soft = draw.blur(region.astype(np.float32), 0.8)
    scene.layers["air"] *= 1.0 + PNEUMOTHORAX_LUCENCY * strength * soft
    scene.layers["vessels"] *= 1.0 - soft
    scene.layers["no_lung"] = np.maximum(scene.layers["no_lung"], soft)
    line = (
        (inside > depth) & (inside <= depth + 1.5) & ndimage.binary_dilation(region, iterations=2)
    )
    scene.layers["extra"] += PLEURAL_LINE * strength * draw.blur(line.astype(np.float32), 0.5)
    return _mask(region.astype(np.float32), lung, scene, top + 5, lung_cx)


def draw_atelectasis(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Plate-like (discoid) band of collapsed lung above a hemidiaphragm."""
    side = _side(rng)
    base = _zone(scene, side, 0.62, 0.88)
    cy, cx = _pick(base, rng, scene.lung(side))
    half = scene.box_w * rng.uniform(0.12, 0.2)
    slope = rng.uniform(-0.25, 0.25)
    ends = np.array([(cx - half, cy - slope * half), (cx + half, cy + slope * half)])
    curve = draw.bezier(np.vstack([ends[0], (cx, cy + rng.uniform(-4, 4)), ends[1]]), n=12)
    band = draw.polylines(scene.shape, [(curve, rng.uniform(5.0, 9.0), 1.0)])
    soft = draw.blur(band, 1.2) / 0.8
    region = scene.lung(side)
    _opacify(scene, soft * region, DENSITY["Atelectasis"] * strength)
    return _mask(soft, region, scene, cy, cx)


def draw_consolidation(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Dense lobar opacity with air bronchograms; the right upper lobe stops at the fissure."""
    lobe = str(rng.choice(["RUL", "RLL", "LLL", "LUL"], p=[0.2, 0.35, 0.3, 0.15]))
    side = lobe[0]
    lo, hi = {"RUL": (-0.1, 0.42), "RLL": (0.5, 1.1), "LLL": (0.55, 1.1), "LUL": (0.25, 0.6)}[lobe]
    lung = scene.lung(side)
    top, bottom = _rows(lung)
    y_lo, y_hi = top + lo * (bottom - top), top + hi * (bottom - top)
    edge = draw.noise(rng, scene.shape, 10.0, octaves=2)
    # A fissure makes a sharp border (the RUL's lower edge); other borders are ragged and soft.
    sharp_hi = 2.0 if lobe == "RUL" else 8.0
    soft = draw.smoothstep((scene.yy - y_lo + 8.0 * edge) / 8.0)
    soft = soft * draw.smoothstep((y_hi - scene.yy + sharp_hi * edge) / sharp_hi) * lung
    soft = np.clip(soft * (0.8 + 0.2 * draw.noise(rng, scene.shape, 6.0)), 0.0, 1.0)
    _opacify(scene, soft, DENSITY["Consolidation"] * strength)
    # Air bronchograms: dark branching tubes left visible inside the consolidated lobe.
    cy, cx = _pick(lung & (soft > 0.5), rng, lung)
    hx, hy = scene.hilum[side]
    tubes = [
        (np.array([(hx, hy), (cx + rng.uniform(-15, 15), cy + rng.uniform(-15, 15))]), 2.0, 1.0)
        for _ in range(3)
    ]
    scene.layers["air"] += (
        0.35 * strength * draw.blur(draw.polylines(scene.shape, tubes), 0.7) * soft
    )
    return _mask(soft, lung, scene, cy, cx)


def draw_pneumonia(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Patchy airspace opacity: a cluster of confluent blobs in one zone of one lung."""
    side = _side(rng, 0.55)
    lo = rng.choice([0.15, 0.4, 0.6])
    zone = _zone(scene, side, lo, lo + 0.3)
    cy, cx = _pick(zone, rng, scene.lung(side))
    soft = np.zeros(scene.shape, np.float32)
    for _ in range(int(rng.integers(3, 7))):
        r = scene.box_w * rng.uniform(0.03, 0.06)
        dy, dx = rng.normal(0, scene.box_w * 0.05, 2)
        soft = np.maximum(
            soft, _blob(scene, rng, cy + dy, cx + dx, r, r * rng.uniform(0.8, 1.3), 0.4)
        )
    region = scene.lung(side)
    _opacify(scene, soft * region, DENSITY["Pneumonia"] * strength)
    return _mask(soft, region, scene, cy, cx)


def draw_lung_opacity(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Ill-defined (ground-glass) opacity: one or two hazy patches anywhere in the lungs."""
    lungs = scene.lungs()
    soft = np.zeros(scene.shape, np.float32)
    centres = []
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = _pick(ndimage.binary_erosion(lungs, iterations=6), rng, lungs)
        centres.append((cy, cx))
        r = scene.box_w * rng.uniform(0.07, 0.13)
        soft = np.maximum(
            soft, _blob(scene, rng, cy, cx, r * rng.uniform(0.8, 1.4), r, 0.5, edge=0.6)
        )
    _opacify(scene, soft * lungs, DENSITY["Lung Opacity"] * strength)
    return _mask(soft, lungs, scene, *centres[0])


def draw_edema(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Bilateral perihilar ("bat-wing") haze with blurred vessels; Kerley B lines at the bases."""
    lungs = scene.lungs()
    soft = np.zeros(scene.shape, np.float32)
    for side, s in (("R", -1.0), ("L", 1.0)):
        hx, hy = scene.hilum[side]
        r = draw.ellipse(
            scene.yy,
            scene.xx,
            hy + 0.05 * scene.box_h,
            hx + s * 0.08 * scene.box_w,
            0.3 * scene.box_h,
            0.24 * scene.box_w,
        )
        soft = np.maximum(soft, draw.smoothstep((1.1 - r) / 0.8))
    soft = soft * np.clip(0.8 + 0.35 * draw.noise(rng, scene.shape, 8.0, octaves=2), 0, 1.2)
    _opacify(scene, soft * lungs, DENSITY["Edema"] * strength)
    scene.layers["vessels"] *= 1.0 - 0.5 * soft  # vessel outlines blur in interstitial fluid
    if strength >= 1.0 and rng.random() < 0.6:
        lines = []
        for side in ("R", "L"):
            zone = _zone(scene, side, 0.7, 0.95)
            first, last = draw.row_extent(zone)
            rows = np.flatnonzero(np.isfinite(first))
            for row in rng.choice(rows, size=4) if len(rows) else ():
                x0 = first[row] if side == "R" else last[row]
                length = rng.uniform(6, 12) * (1 if side == "R" else -1)
                lines.append(
                    (np.array([(x0, row), (x0 + length, row + rng.uniform(-1, 1))]), 1.0, 1.0)
                )
        scene.layers["extra"] += KERLEY_LINES * draw.polylines(scene.shape, lines) * lungs
    hx, hy = scene.hilum["R"]
    return _mask(soft, lungs, scene, hy, hx - 0.1 * scene.box_w)


def draw_lung_lesion(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Round, well-defined density: a nodule (< 3 cm) or, less often, a mass."""
    lungs = scene.lungs()
    radius = scene.box_w * (
        rng.uniform(0.035, 0.06) if rng.random() < 0.75 else rng.uniform(0.06, 0.09)
    )
    cy, cx = _pick(ndimage.binary_erosion(lungs, iterations=int(radius) + 2), rng, lungs)
    soft = _blob(scene, rng, cy, cx, radius * rng.uniform(0.85, 1.15), radius, 0.06, edge=0.15)
    _opacify(scene, soft * lungs, DENSITY["Lung Lesion"] * strength)
    return _mask(soft, lungs, scene, cy, cx)


def draw_pleural_other(scene: Scene, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Pleural thickening or plaque: a lens of soft tissue along the lateral chest wall."""
    side = _side(rng)
    lung = scene.lung(side)
    top, bottom = _rows(lung)
    inside = ndimage.distance_transform_edt(lung)
    centre = top + (bottom - top) * rng.uniform(0.3, 0.75)
    half = (bottom - top) * rng.uniform(0.1, 0.2)
    thick = scene.box_w * rng.uniform(0.05, 0.08) * (0.6 + 0.4 * strength)
    profile = np.sqrt(np.clip(1.0 - ((scene.yy - centre) / half) ** 2, 0.0, 1.0)) * thick
    lung_cx = float(np.mean(np.flatnonzero(lung.any(axis=0)))) if lung.any() else scene.mid
    lateral = (scene.xx < lung_cx) if side == "R" else (scene.xx > lung_cx)
    soft = draw.smoothstep((profile - inside + 1.0) / 2.0) * lateral * lung
    _opacify(scene, soft, DENSITY["Pleural Other"] * strength)
    if rng.random() < 0.4:  # calcified plaque: brighter than soft tissue
        scene.layers["extra"] += PLEURAL_LINE * strength * soft
    return _mask(soft, lung, scene, centre, lung_cx)


#: Observation name -> drawing function, in drawing order.
FINDINGS = {
    "Enlarged Cardiomediastinum": draw_enlarged_cardiomediastinum,
    "Cardiomegaly": draw_cardiomegaly,
    "Pleural Effusion": draw_pleural_effusion,
    "Pneumothorax": draw_pneumothorax,
    "Atelectasis": draw_atelectasis,
    "Consolidation": draw_consolidation,
    "Pneumonia": draw_pneumonia,
    "Lung Opacity": draw_lung_opacity,
    "Edema": draw_edema,
    "Lung Lesion": draw_lung_lesion,
    "Pleural Other": draw_pleural_other,
    "Fracture": draw_fracture,
    "Support Devices": draw_support_devices,
}
