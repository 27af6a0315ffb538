"""Real lung-field shapes from the lung masks that torchxrayvision ships.

``torchxrayvision/data/semantic_masks_v7labs_lungs.zip`` holds about 500 lung segmentations of
real frontal chest radiographs (PNG and JPEG files of many sizes; lung = 255, other annotations =
127, a few files are empty or hold one lung). :func:`lung_library` reads them once per process,
keeps the masks that show two plausible lungs, crops each to the lungs' bounding box and resizes it
to a canonical square, one channel per lung. The phantom stretches a canonical mask into the lung
box of an image, so every phantom lung has the outline of a real one.

Nothing is copied out of the installed package: the masks live in memory only.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from chexlib.data.labels import torchxrayvision_file
from chexlib.errors import MissingFileError

#: Side of the canonical square every lung mask is resized to (pixels).
CANONICAL_SIZE = 160
#: Masks are decoded at about this size before cropping (JPEG draft mode makes this cheap).
_DECODE_SIZE = 320
#: Quality filter (why: the zip holds empty masks, single lungs, and crops of odd shape).
_MIN_AREA_RATIO = 0.55  # smaller lung / larger lung
_ASPECT_RANGE = (0.65, 1.3)  # height / width of the bounding box of both lungs
_MIN_FILL = 0.45  # lung pixels / bounding-box pixels

_cache: LungLibrary | None = None


@dataclass(frozen=True)
class LungLibrary:
    """Canonical lung masks.

    Attributes
    ----------
    masks : ndarray uint8, shape [N, 2, S, S]
        Smoothed masks (0..255) in the lungs' bounding box, resized to S = CANONICAL_SIZE.
        Channel 0 is the patient's right lung (image left), channel 1 the left lung (image right).
    aspect : ndarray float32, shape [N]
        Height / width of the original bounding box, to undo the square resize.
    names : tuple of str
        File names inside the zip (for provenance in error messages and notebooks).
    """

    masks: np.ndarray
    aspect: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def lung_masks_path() -> Path:
    """Path of ``semantic_masks_v7labs_lungs.zip`` inside the installed torchxrayvision."""
    return torchxrayvision_file("semantic_masks_v7labs_lungs.zip", "the phantom's real lung shapes")


def lung_library() -> LungLibrary:
    """Return the canonical lung masks, reading them on first use (about 3 s) and caching them.

    Returns
    -------
    LungLibrary
        At least a few hundred masks.
    """
    global _cache
    if _cache is None:
        _cache = _read_library(lung_masks_path())
    return _cache


def set_lung_library(library: LungLibrary) -> None:
    """Install an already loaded library (used to hand it to worker processes)."""
    global _cache
    _cache = library


def _read_library(path: Path) -> LungLibrary:
    masks, aspects, names = [], [], []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            if name.endswith("/"):
                continue
            canonical = _canonical(archive.read(name))
            if canonical is not None:
                masks.append(canonical[0])
                aspects.append(canonical[1])
                names.append(name.rsplit("/", 1)[-1])
    if len(names) < 10:
        raise MissingFileError(
            f"{path}: only {len(names)} usable lung masks; the file looks damaged"
        )
    return LungLibrary(
        masks=np.stack(masks), aspect=np.asarray(aspects, np.float32), names=tuple(names)
    )


def _canonical(data: bytes) -> tuple[np.ndarray, float] | None:
    """Decode one mask file; return ([2, S, S] uint8 masks, aspect) or None if unusable."""
    try:
        image = Image.open(io.BytesIO(data))
        image.draft("L", (_DECODE_SIZE, _DECODE_SIZE))
        image = image.convert("L")
    except (OSError, ValueError):
        return None
    scale = _DECODE_SIZE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.NEAREST)  # binary mask: nearest is enough, and fast
    # 255 is lung; 127 marks other structures the annotators drew, which are not lung.
    lung = np.asarray(image) > 190
    lung = _fill_holes(lung)
    labels, count = ndimage.label(lung)
    if count < 2:
        return None
    areas = np.bincount(labels.ravel())[1:]
    order = np.argsort(areas)[::-1][:2] + 1
    a, b = labels == order[0], labels == order[1]
    small, large = sorted((a.sum(), b.sum()))
    if small < _MIN_AREA_RATIO * large:
        return None
    cols_a, cols_b = np.nonzero(a.any(0))[0], np.nonzero(b.any(0))[0]
    if cols_a.mean() > cols_b.mean():
        a, b = b, a
        cols_a, cols_b = cols_b, cols_a
    # The two lungs must sit side by side, not overlap horizontally.
    if cols_a.max() >= cols_b.min():
        return None
    both = a | b
    rows = np.nonzero(both.any(1))[0]
    top, bottom, left, right = rows[0], rows[-1] + 1, cols_a[0], cols_b[-1] + 1
    height, width = bottom - top, right - left
    aspect = height / width
    if not (_ASPECT_RANGE[0] <= aspect <= _ASPECT_RANGE[1]):
        return None
    if both[top:bottom, left:right].mean() < _MIN_FILL:
        return None
    out = np.empty((2, CANONICAL_SIZE, CANONICAL_SIZE), np.uint8)
    for i, lung_mask in enumerate((a, b)):
        crop = Image.fromarray((lung_mask[top:bottom, left:right] * 255).astype(np.uint8))
        out[i] = np.asarray(crop.resize((CANONICAL_SIZE, CANONICAL_SIZE), Image.BILINEAR))
    return out, float(aspect)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions that do not touch the border (one labelling, faster than scipy's)."""
    background, _ = ndimage.label(~mask)
    border = np.unique(
        np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    )
    return mask | ~np.isin(background, border)


def place_lungs(
    library: LungLibrary, index: int, box: tuple[float, float, float, float], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Stretch canonical mask ``index`` into a box of an image.

    Parameters
    ----------
    library : LungLibrary
    index : int
        Which canonical mask.
    box : (top, left, height, width)
        Where the bounding box of both lungs goes, in pixels (floats allowed).
    shape : (H, W)
        Image shape.

    Returns
    -------
    right, left : ndarray bool, shape [H, W]
        The patient's right lung (image left) and left lung (image right).
    """
    height, width = shape
    top, left, box_h, box_w = box
    # Inverse mapping: image pixel centre -> canonical coordinate, sampled bilinearly (vectorised).
    ys = (np.arange(height, dtype=np.float32) + 0.5 - top) / box_h * CANONICAL_SIZE - 0.5
    xs = (np.arange(width, dtype=np.float32) + 0.5 - left) / box_w * CANONICAL_SIZE - 0.5
    out = []
    for channel in library.masks[index]:
        sampled = _bilinear_separable(channel.astype(np.float32), ys, xs)
        out.append(sampled > 127.5)
    return out[0], out[1]


def _bilinear_separable(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``image`` [h, w] on the grid ys x xs with bilinear weights; zero outside."""
    padded = np.pad(image, 1)
    ys, xs = (
        np.clip(ys + 1, 0, padded.shape[0] - 1.001),
        np.clip(xs + 1, 0, padded.shape[1] - 1.001),
    )
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    rows0, rows1 = padded[y0], padded[y0 + 1]
    top = rows0[:, x0] * (1 - wx) + rows0[:, x0 + 1] * wx
    bottom = rows1[:, x0] * (1 - wx) + rows1[:, x0 + 1] * wx
    return top * (1 - wy) + bottom * wy
