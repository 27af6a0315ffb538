"""Render one phantom radiograph: anatomy, findings, exposure, noise and the planted confounders.

:func:`render_image` is the whole pipeline for one image and is what the worker processes run.
The image is composed in a linear "brightness" space (0 black .. 1 white) from the scene's
layers; the constants below set how bright each tissue is, so a later calibration can make the
findings harder or easier without touching the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from chexlib.observations import OBSERVATIONS
from chexlib.phantom import draw
from chexlib.phantom.anatomy import Scene, build_scene, sample_patient, sample_study
from chexlib.phantom.drain import draw_drain, drain_rng
from chexlib.phantom.findings import FINDINGS
from chexlib.phantom.lungs import lung_library
from chexlib.phantom.skeleton import bone_layer, make_ribs
from chexlib.phantom.vessels import vessel_layer

#: Brightness of air outside the body.
BACKGROUND = 0.03
#: Brightness added by a full soft-tissue thickness (the mediastinum, the abdomen).
BODY_LEVEL = 0.80
#: Brightness removed by aerated lung (scaled by the lung's depth).
LUNG_DARKNESS = 0.62
#: Brightness of vascular markings over aerated lung.
VESSEL_BRIGHTNESS = 0.2
#: Relative variation of the lung's air content (parenchymal texture).
PARENCHYMA_TEXTURE = 0.08
#: Brightness of bone (times the patient's bone density).
BONE_BRIGHTNESS = 0.28
#: Darkness of the tracheal air column and of the gastric bubble.
TRACHEA_DARKNESS = 0.1
GASTRIC_DARKNESS = 0.22
BOWEL_GAS = 0.05
#: The planted shortcut: brightness and height (pixels) of the burned-in "PORTABLE" text.
MARKER_TEXT = "PORTABLE"
MARKER_BRIGHTNESS = 0.97
MARKER_SIZE = (11, 15)


@dataclass(frozen=True)
class ImageSpec:
    """What one worker needs to render one image (picklable, small)."""

    seed: int
    image_number: int
    patient: int
    sex: str
    age: int
    view: str  # "AP" or "PA"
    drawn: tuple[float, ...]  # 14 strengths, OBSERVATIONS order
    shortcut: bool
    drain: bool = False  # the planted chest drain (chexlib.phantom.drain)


@dataclass
class Rendered:
    """A rendered image with its ground truth.

    Attributes
    ----------
    image : ndarray uint8, shape [320, W]
    masks : dict observation -> ndarray bool [320, W], one per drawn finding
    shortcut : ndarray bool [320, W] or None, the marker's box
    scene : Scene
    drain : ndarray bool [320, W] or None, every pixel the chest drain changes
        The geometry (heart mask, lungs, ...), for tests and notebooks.
    """

    image: np.ndarray
    masks: dict
    shortcut: np.ndarray | None
    scene: Scene
    drain: np.ndarray | None = None


def image_rng(seed: int, image_number: int) -> np.random.Generator:
    """The generator of one image: everything random about it comes from here."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_number)]))


def patient_rng(seed: int, patient: int) -> np.random.Generator:
    """The generator of one patient's anatomy (a separate stream from the images')."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(patient)], spawn_key=(1,)))


def render_image(spec: ImageSpec) -> Rendered:
    """Render one image and the masks of its drawn findings.

    Parameters
    ----------
    spec : ImageSpec

    Returns
    -------
    Rendered
    """
    library = lung_library()
    rng = image_rng(spec.seed, spec.image_number)
    patient = sample_patient(patient_rng(spec.seed, spec.patient), spec.sex, spec.age, len(library))
    study = sample_study(rng, spec.view)
    scene = build_scene(patient, study, library)
    scene.ribs = make_ribs(scene)
    scene.layers["vessels"] = vessel_layer(scene)
    masks = {}
    for name, finding in FINDINGS.items():
        strength = float(spec.drawn[OBSERVATIONS.index(name)])
        if strength > 0:
            masks[name] = finding(scene, rng, strength)
    image = compose(scene, rng)
    marker = None
    if spec.shortcut:
        image, marker = burn_marker(image, rng)
    drain = None
    if spec.drain:  # last, from its own stream: without it, only its pixels differ
        image, drain = draw_drain(image, scene, masks, drain_rng(spec.seed, spec.image_number))
    return Rendered(image=_to_uint8(image), masks=masks, shortcut=marker, scene=scene,
                    drain=drain)


def compose(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Turn the scene's layers into a radiograph (float32 [H, W], 0..1), before the marker.

    Brightness = body soft tissue - aerated lung + vessels + bone + additions (fluid, devices),
    then the study's exposure curve, unsharpness and quantum noise.
    """
    p, s = scene.patient, scene.study
    layers = scene.layers
    lungs = scene.lungs().astype(np.float32)
    # Parenchyma is not uniform: a faint mottled texture of the air content.
    # (No parenchyma, no texture: where a pneumothorax has replaced lung by air.)
    texture = 1.0 + PARENCHYMA_TEXTURE * draw.noise(rng, scene.shape, 5.0, octaves=2) * (
        1.0 - layers["no_lung"]
    )
    aerated = draw.blur(lungs * layers["air"] * texture, 1.4)
    # The lung is thickest (darkest) in its middle and bases, thin at the apex and margins.
    depth = draw.blur(lungs, 0.08 * scene.box_w)
    depth = 0.35 + 0.65 * depth / max(float(depth.max()), 1e-6)
    visible = np.clip(aerated, 0.0, 1.0)
    # Soft tissue is not perfectly smooth (muscle, fat planes): a slow +-4 % variation.
    tissue = layers["thickness"] * (1.0 + 0.04 * draw.noise(rng, scene.shape, 40.0))
    image = BACKGROUND + BODY_LEVEL * tissue
    image = image - LUNG_DARKNESS * aerated * depth
    image = image + VESSEL_BRIGHTNESS * layers["vessels"] * visible
    bones = bone_layer(scene)
    image = image + BONE_BRIGHTNESS * p.bone_density * bones * (0.15 + 0.85 * visible)
    image = (
        image - TRACHEA_DARKNESS * _airways(scene) - GASTRIC_DARKNESS * _gastric_bubble(scene, rng)
    )
    image = image - BOWEL_GAS * _bowel_gas(scene, rng)
    image = image + layers["extra"]
    # Exposure: window, contrast, gamma; AP films are flatter (scatter, no grid).
    image = (image - 0.5) * s.contrast + 0.5 + s.exposure
    image = np.clip(image, 0.0, 1.0) ** s.gamma
    image = draw.blur(image, s.blur)
    grain = rng.standard_normal(image.shape).astype(np.float32)
    mottle = draw.noise(rng, image.shape, 12.0)
    image = image + s.noise * grain + 0.25 * s.noise * mottle
    return np.clip(image, 0.0, 1.0)


def _airways(scene: Scene) -> np.ndarray:
    """Trachea from the neck to the carina, then the two main bronchi (soft-edged air column)."""
    carina = (scene.mid - 0.005 * scene.box_w, scene.top + 0.33 * scene.box_h)
    lines = [(np.array([(scene.mid - 0.01 * scene.box_w, 0.0), carina]), 0.06 * scene.box_w, 1.0)]
    for side in ("R", "L"):
        hx, hy = scene.hilum[side]
        lines.append((np.array([carina, (hx, hy - 0.02 * scene.box_h)]), 0.035 * scene.box_w, 0.8))
    return draw.blur(draw.polylines(scene.shape, lines), 1.5)


def _gastric_bubble(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Gas in the stomach fundus under the left hemidiaphragm (image right)."""
    x = scene.mid + scene.box_w * rng.uniform(0.12, 0.3)
    y = (
        float(scene.dome[int(np.clip(x, 0, scene.shape[1] - 1))])
        + rng.uniform(0.04, 0.08) * scene.box_h
    )
    r = draw.ellipse(
        scene.yy,
        scene.xx,
        y,
        x,
        rng.uniform(0.03, 0.05) * scene.box_h,
        rng.uniform(0.06, 0.1) * scene.box_w,
    )
    return draw.smoothstep((1.0 - r) / 0.4) * rng.uniform(0.3, 1.0)


def _bowel_gas(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Faint mottled gas in the upper abdomen, below the diaphragm."""
    depth = (scene.yy - scene.dome[None, :] - 0.12 * scene.box_h) / (0.1 * scene.box_h)
    mottle = draw.smoothstep((draw.noise(rng, scene.shape, 14.0, octaves=2) - 0.3) / 1.5)
    return draw.smoothstep(depth) * mottle * scene.layers["thickness"]


def burn_marker(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Burn the "PORTABLE" text into a top corner, as portable X-ray units do.

    Returns
    -------
    image : ndarray float32 [H, W]
    box : ndarray bool [H, W]
        The marker's bounding box (padded by 2 pixels): the shortcut's ground-truth mask.
    """
    height, width = image.shape
    font = ImageFont.load_default(size=int(rng.integers(MARKER_SIZE[0], MARKER_SIZE[1] + 1)))
    canvas = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(canvas)
    left, top, right, bottom = pen.textbbox((0, 0), MARKER_TEXT, font=font)
    margin_x, margin_y = int(rng.integers(6, 20)), int(rng.integers(5, 16))
    x = margin_x if rng.random() < 0.5 else width - margin_x - (right - left)
    pen.text((x - left, margin_y - top), MARKER_TEXT, fill=255, font=font)
    text = np.asarray(canvas, np.float32) / 255.0
    image = np.maximum(image, MARKER_BRIGHTNESS * text)
    box = np.zeros(image.shape, bool)
    box[
        max(margin_y - 2, 0) : margin_y + (bottom - top) + 2, max(x - 2, 0) : x + (right - left) + 2
    ] = True
    return image, box


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
