"""The body of a phantom radiograph: patient habitus, lungs, heart, mediastinum, diaphragm.

A :class:`Patient` (drawn once per patient, so every study of a patient shows the same anatomy)
and a :class:`Study` (drawn per image: film width, AP or PA technique, positioning, exposure)
are turned by :func:`build_scene` into a :class:`Scene`: boolean masks of the lungs, heart and
mediastinum plus float layers that the findings then modify and :mod:`chexlib.phantom.render`
composes into the image.

Geometry in one sentence: the lateral, apical and diaphragmatic borders of the lungs come from a
real lung mask (:mod:`chexlib.phantom.lungs`); the medial borders are the parametric mediastinum
and heart, so the cardiothoracic ratio (CTR) is exactly controlled. Patient right is image left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from chexlib.phantom import draw
from chexlib.phantom.lungs import LungLibrary, place_lungs

#: Image height of the small CheXpert release; widths vary.
HEIGHT = 320
WIDTH_RANGE = (320, 390)
#: Normal cardiothoracic ratio on a PA film (AP films magnify the heart by AP_HEART_MAGNIFICATION).
NORMAL_CTR = (0.39, 0.45)
AP_HEART_MAGNIFICATION = 1.07
#: Lung height on an AP film relative to PA (supine / portable films are taken in lower inspiration).
AP_INSPIRATION = (0.84, 0.94)
#: Half-widths of the upper mediastinum (fraction of the lung box width) for the right and left borders.
MEDIASTINUM_HALF_WIDTH = (0.085, 0.10)


@dataclass(frozen=True)
class Patient:
    """Anatomy shared by all studies of one patient (sizes are fractions of the lung box)."""

    lung_index: int
    scale: float  # thorax size relative to an average adult male
    wall: float  # chest-wall soft tissue (habitus): 0.05 slim .. 0.18 obese
    ctr: float  # cardiothoracic ratio on a PA film
    heart_tilt: float  # radians
    knob: float  # aortic knob prominence (grows with age)
    breasts: float  # 0 for male / unknown sex
    bone_density: float  # 1 for young adults, lower in old age
    vessel_seed: int  # the pulmonary vessel tree, identical across studies
    rib_phase: float  # vertical offset of the ribs
    female: bool


@dataclass(frozen=True)
class Study:
    """Acquisition of one image."""

    width: int
    view: str  # "AP" or "PA"
    shift: tuple[float, float]  # (dy, dx) pixels
    inspiration: float  # lung height relative to full inspiration
    exposure: float  # overall brightness offset
    contrast: float  # contrast multiplier
    gamma: float
    noise: float  # quantum noise standard deviation (0..1 units)
    blur: float  # unsharpness (pixels)


def sample_patient(rng: np.random.Generator, sex: str, age: int, n_lungs: int) -> Patient:
    """Draw the anatomy of a patient.

    Parameters
    ----------
    rng : numpy Generator
        The patient's own generator (from its patient number).
    sex : {"Male", "Female", "Unknown"}
    age : int
    n_lungs : int
        Size of the lung-shape library.
    """
    female = sex == "Female"
    adult = float(np.clip((age - 4) / 14, 0.35, 1.0))  # children have smaller chests
    scale = adult * (0.94 if female else 1.0) * rng.uniform(0.92, 1.05)
    wall = float(np.clip(rng.gamma(4.0, 0.025), 0.05, 0.2))
    old = float(np.clip((age - 45) / 40, 0, 1))
    return Patient(
        lung_index=int(rng.integers(n_lungs)),
        scale=float(scale),
        wall=wall,
        ctr=float(rng.uniform(*NORMAL_CTR)),
        heart_tilt=float(rng.uniform(0.2, 0.45)),
        knob=float(0.015 + 0.03 * old * rng.uniform(0.5, 1.0)),
        breasts=float(female * (age >= 14) * rng.uniform(0.5, 1.0) * (0.6 + wall * 3)),
        bone_density=float(1.0 - 0.35 * old * rng.uniform(0.5, 1.0)),
        vessel_seed=int(rng.integers(2**31)),
        rib_phase=float(rng.uniform(-0.3, 0.3)),
        female=female,
    )


def sample_study(rng: np.random.Generator, view: str) -> Study:
    """Draw the acquisition of one image; AP films are flatter and noisier than PA films."""
    ap = view == "AP"
    return Study(
        width=int(rng.integers(WIDTH_RANGE[0], WIDTH_RANGE[1] + 1)),
        view="AP" if ap else "PA",
        shift=(float(rng.normal(0, 5)), float(rng.normal(0, 6))),
        inspiration=float(rng.uniform(*AP_INSPIRATION)) if ap else float(rng.uniform(0.97, 1.03)),
        exposure=float(rng.normal(0.0, 0.04)),
        contrast=float(rng.uniform(0.85, 1.0) if ap else rng.uniform(1.0, 1.15)),
        gamma=float(rng.uniform(1.1, 1.5)),
        noise=float(rng.uniform(0.014, 0.028) if ap else rng.uniform(0.007, 0.016)),
        blur=float(rng.uniform(0.6, 1.1) if ap else rng.uniform(0.4, 0.8)),
    )


@dataclass
class Scene:
    """Everything the findings and the renderer share about one image.

    Masks are bool [H, W]; layers float32 [H, W]. ``yy`` is [H, 1] and ``xx`` [1, W] (pixel
    centres) so that expressions broadcast to [H, W] without storing full grids.

    Layers: ``air`` (1 = normally aerated lung; opacities lower it, a pneumothorax raises it),
    ``no_lung`` (1 where air without lung tissue shows no parenchymal texture), ``extra``
    (brightness added on top: devices, pleural lines), ``thickness`` (body soft tissue) and
    ``vessels`` (vascular markings).
    """

    patient: Patient
    study: Study
    shape: tuple[int, int]
    yy: np.ndarray
    xx: np.ndarray
    mid: float  # x of the spine
    top: float  # y of the lung apices
    box_w: float  # width of both lungs together
    box_h: float  # height of the lungs on this film (full-inspiration height x inspiration)
    lung_r: np.ndarray  # patient right hemithorax lung field incl. parts later hidden by the heart
    lung_l: np.ndarray
    dome: np.ndarray  # [W] diaphragm height (y) per column
    heart: np.ndarray = field(default=None)
    mediastinum: np.ndarray = field(default=None)
    hilum: dict = field(default_factory=dict)  # side -> (x, y), side in {"R", "L"}
    layers: dict = field(default_factory=dict)
    ribs: list = field(default_factory=list)
    rib_breaks: list = field(default_factory=list)
    heart_ctr: float = 0.0
    mediastinum_scale: float = 1.0
    cache: dict = field(default_factory=dict)  # derived values (lung borders); lungs never move

    def lung(self, side: str) -> np.ndarray:
        """Visible (aerated) lung field of one side: the hemithorax lung minus heart and mediastinum."""
        lung = self.lung_r if side == "R" else self.lung_l
        return lung & ~self.heart & ~self.mediastinum

    def lungs(self) -> np.ndarray:
        """Both visible lung fields."""
        return self.lung("R") | self.lung("L")

    def thorax_width(self) -> float:
        """Internal thoracic diameter: widest extent between the outer lung borders (pixels)."""
        return horizontal_extent(self.lung_r | self.lung_l | self.heart)

    def ctr(self) -> float:
        """Cardiothoracic ratio measured on the heart mask."""
        return cardiothoracic_ratio(self.heart, self.lung_r | self.lung_l | self.heart)

    def set_heart(self, ctr: float) -> None:
        """(Re)draw the heart so that its mask has the given cardiothoracic ratio."""
        self.heart_ctr = ctr
        self.heart = _heart_mask(self, ctr)

    def set_mediastinum(self, scale: float) -> None:
        """(Re)draw the upper mediastinum, ``scale`` times its normal width."""
        self.mediastinum_scale = scale
        self.mediastinum = _mediastinum_mask(self, scale)


def horizontal_extent(mask: np.ndarray) -> float:
    """Horizontal extent of a mask, leftmost to rightmost column (pixels); 0 if empty."""
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[-1] - cols[0] + 1) if len(cols) else 0.0


def cardiothoracic_ratio(heart: np.ndarray, thorax: np.ndarray) -> float:
    """CTR = horizontal extent of the heart / internal thoracic diameter.

    Parameters
    ----------
    heart : ndarray bool, shape [H, W]
        Heart silhouette.
    thorax : ndarray bool, shape [H, W]
        Lungs (hemithoraces) and heart; its widest row is the internal thoracic diameter.
    """
    return horizontal_extent(heart) / max(draw.max_width(thorax), 1.0)


def build_scene(patient: Patient, study: Study, library: LungLibrary) -> Scene:
    """Place the lungs, mediastinum and heart of a patient on a film.

    Returns
    -------
    Scene
        With masks set and the layers ``air`` (1 inside the lungs) and ``thickness`` (body) made.
    """
    height, width = HEIGHT, study.width
    yy = (np.arange(height, dtype=np.float32) + 0.5)[:, None]
    xx = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    aspect = float(library.aspect[patient.lung_index])
    box_w = min(HEIGHT * 0.80 * patient.scale, width * 0.84)
    box_h_full = box_w * aspect
    if box_h_full > HEIGHT * 0.72:  # tall lungs: keep the diaphragm on the film
        box_h_full = HEIGHT * 0.72
        box_w = box_h_full / aspect
    box_h = box_h_full * study.inspiration
    top = HEIGHT * 0.11 + study.shift[0] + (box_h_full - box_h) * 0.15
    mid = width / 2 + study.shift[1]
    lung_r, lung_l = place_lungs(
        library, patient.lung_index, (top, mid - box_w / 2, box_h, box_w), (height, width)
    )
    scene = Scene(
        patient=patient,
        study=study,
        shape=(height, width),
        yy=yy,
        xx=xx,
        mid=mid,
        top=top,
        box_w=box_w,
        box_h=box_h,
        lung_r=lung_r,
        lung_l=lung_l,
        dome=_dome(lung_r, lung_l),
    )
    _fill_medial_gap(scene)
    magnification = AP_HEART_MAGNIFICATION if study.view == "AP" else 1.0
    scene.set_mediastinum(1.0)
    scene.set_heart(patient.ctr * magnification)
    scene.hilum = {
        "R": (mid - box_w * 0.16, top + box_h * 0.44),
        "L": (mid + box_w * 0.17, top + box_h * 0.40),
    }
    scene.layers["air"] = np.ones((height, width), np.float32)
    scene.layers["extra"] = np.zeros((height, width), np.float32)  # added brightness
    scene.layers["no_lung"] = np.zeros((height, width), np.float32)  # air without lung tissue
    scene.layers["thickness"] = body_thickness(scene)
    return scene


def _dome(lung_r: np.ndarray, lung_l: np.ndarray) -> np.ndarray:
    """Diaphragm height (y) per column.

    The lowest lung pixel of a column is the diaphragm only in the lateral part of each lung: in
    the medial part it may be the real patient's heart border. So a parabola fitted to the lateral
    two thirds of each lung continues the dome medially, and the gap between the lungs is bridged
    by linear interpolation.
    """
    height, width = lung_r.shape
    cols = np.arange(width, dtype=np.float64)
    dome = np.full(width, np.nan)
    for lung, lateral_is_left in ((lung_r, True), (lung_l, False)):
        has = lung.any(axis=0)
        if has.sum() < 8:
            continue
        bottom = (height - 1 - np.argmax(lung[::-1], axis=0)).astype(np.float64)
        c = np.flatnonzero(has)
        frac = (c - c[0]) / max(c[-1] - c[0], 1)
        lateral = c[frac < 0.62] if lateral_is_left else c[frac > 0.38]
        fit = np.polyval(np.polyfit(lateral, bottom[lateral], 2), c)
        fit = np.clip(fit, bottom[lateral].min(), bottom[lateral].max())
        dome[c] = np.maximum(bottom[c], fit)
    known = np.isfinite(dome)
    if not known.any():
        return np.full(width, height * 0.8, np.float32)
    return np.interp(cols, cols[known], dome[known]).astype(np.float32)


def _fill_medial_gap(scene: Scene) -> None:
    """Extend each lung medially to the midline; the mediastinum and heart then cut the borders.

    Why: a real mask's medial border is its own patient's heart; the phantom needs a heart of a
    chosen size, so the real notch is filled and the parametric heart drawn instead.
    """
    _, last_r = draw.row_extent(scene.lung_r)
    first_l, _ = draw.row_extent(scene.lung_l)
    # Only below the aortic arch: above it the real masks' rounded medial apices are kept.
    rows = scene.yy[:, 0] > scene.top + 0.3 * scene.box_h
    both = np.isfinite(last_r) & np.isfinite(first_l) & rows
    above_dome = scene.yy <= scene.dome[None, :]
    x = scene.xx
    gap_r = both[:, None] & (x > np.nan_to_num(last_r)[:, None]) & (x <= scene.mid) & above_dome
    gap_l = both[:, None] & (x < np.nan_to_num(first_l)[:, None]) & (x > scene.mid) & above_dome
    scene.lung_r = scene.lung_r | gap_r
    scene.lung_l = scene.lung_l | gap_l


def _mediastinum_mask(scene: Scene, scale: float) -> np.ndarray:
    """Upper mediastinum: a band around the spine from the top of the film to the heart,
    with the aortic knob bulging to the patient's left."""
    p = scene.patient
    y = scene.yy
    half_r = MEDIASTINUM_HALF_WIDTH[0] * scene.box_w * scale
    half_l = MEDIASTINUM_HALF_WIDTH[1] * scene.box_w * scale
    knob_y = scene.top + 0.26 * scene.box_h
    knob = p.knob * scene.box_w * scale * np.exp(-(((y - knob_y) / (0.06 * scene.box_h)) ** 2))
    # Above the arch the mediastinum narrows to the trachea and the great vessels.
    narrow = 0.7 + 0.3 * draw.smoothstep((y - scene.top - 0.1 * scene.box_h) / (0.15 * scene.box_h))
    half_r, half_l = half_r * narrow, half_l * narrow
    # The superior vena cava drifts laterally as it descends to the right atrium.
    half_r = half_r * (
        1.0 + 0.25 * draw.smoothstep((y - scene.top - 0.3 * scene.box_h) / (0.3 * scene.box_h))
    )
    # The pulmonary trunk below the knob; and borders that are not ruler-straight (vessels,
    # fat), with the same gentle undulation in every study of the patient.
    trunk_y = scene.top + 0.4 * scene.box_h
    trunk = 0.5 * p.knob * scene.box_w * np.exp(-(((y - trunk_y) / (0.05 * scene.box_h)) ** 2))
    phase = np.random.default_rng([p.vessel_seed, 2]).uniform(0, 2 * np.pi, 4)
    t = 2 * np.pi * (y - scene.top) / scene.box_h
    wobble_r = 0.012 * scene.box_w * (np.sin(1.7 * t + phase[0]) + 0.5 * np.sin(3.1 * t + phase[1]))
    wobble_l = 0.012 * scene.box_w * (np.sin(1.9 * t + phase[2]) + 0.5 * np.sin(3.3 * t + phase[3]))
    half_r = half_r + wobble_r
    half_l = half_l + wobble_l + knob + trunk
    # The band reaches the diaphragm, so it always joins the heart without a notch.
    band = (scene.xx > scene.mid - half_r) & (scene.xx < scene.mid + half_l)
    return band & (y <= scene.dome[None, :] + 2)


def _heart_mask(scene: Scene, ctr: float) -> np.ndarray:
    """Heart silhouette: an ellipse sitting on the diaphragm, its long axis tilted down to the
    apex on the patient's left, a third of it right of the midline and two thirds left.

    Scaled (a few passes) so that its horizontal extent / thoracic width equals ``ctr``.
    """
    thorax = max(draw.max_width(scene.lung_r | scene.lung_l), 1.0)
    target = ctr * thorax
    tilt = -scene.patient.heart_tilt  # negative: long axis points down and to the image right
    cols = np.arange(len(scene.dome))
    size = target / 2
    heart = np.zeros(scene.shape, bool)
    for _ in range(4):
        rx, ry = size, size * 0.68
        cx = scene.mid + 0.22 * 2 * size
        floor = float(np.interp(cx, cols, scene.dome))
        cy = floor - 0.35 * ry
        inside = draw.ellipse(scene.yy, scene.xx, cy, cx, ry, rx, angle=tilt) < 1.0
        heart = inside & (scene.yy <= scene.dome[None, :] + 2)
        cols_in = np.flatnonzero(heart.any(axis=0))
        if len(cols_in) == 0:
            break
        extent = cols_in[-1] - cols_in[0] + 1
        if abs(extent - target) < 0.5:
            break
        size *= target / extent
    return heart


def body_thickness(scene: Scene) -> np.ndarray:
    """Soft-tissue thickness in the beam: 0 outside the body, 1 in the midline.

    Neck, sloping shoulders with the deltoid bulge, the chest (wider with more chest-wall fat),
    breast shadows over the lower lung fields of women, and on AP films the arms beside the chest.
    """
    p, s = scene.patient, scene.study
    y, x = scene.yy, scene.xx
    box_w, box_h = scene.box_w, scene.box_h
    chest = (
        box_w
        * (0.5 + p.wall)
        * (1.0 - 0.05 * draw.smoothstep((y - scene.top - 0.6 * box_h) / box_h))
    )
    neck_y, shoulder_y = scene.top - 0.09 * HEIGHT, scene.top + 0.03 * box_h
    rise = draw.smoothstep((y - neck_y) / (shoulder_y - neck_y))
    bulge = 0.16 * box_w * np.exp(-(((y - shoulder_y) / (0.1 * HEIGHT)) ** 2))
    neck = 0.19 * box_w
    half = neck + (chest + bulge - neck) * rise
    r = np.clip(np.abs(x - scene.mid) / half, 0.0, 1.0)
    body = (1.0 - r**2.2) ** 0.6
    if s.view == "AP":
        arm_r = box_w * 0.075
        for side in (-1, 1):
            ax = scene.mid + side * (chest + box_w * 0.03 + arm_r)
            arm = np.sqrt(np.clip(1.0 - ((x - ax) / arm_r) ** 2, 0.0, 1.0))
            body = np.maximum(
                body, 0.75 * arm * draw.smoothstep((y - shoulder_y) / (0.05 * HEIGHT))
            )
    if p.breasts > 0:
        for side in (-1, 1):
            cx = scene.mid + side * box_w * 0.28
            cy = scene.top + box_h * 0.74
            rr = draw.ellipse(y, x, cy, cx, box_w * 0.15, box_w * 0.22)
            # A breast shadow has a sharp inferior edge and fades upwards.
            fade = draw.smoothstep((y - (cy - box_w * 0.15)) / (box_w * 0.25))
            body = body + 0.07 * p.breasts * draw.smoothstep((1.0 - rr) / 0.08) * fade
    return body.astype(np.float32)
