"""Vectorised drawing primitives shared by the anatomy and the findings.

Every function works on whole arrays (numpy, scipy.ndimage) or hands polylines to PIL's C
rasteriser: there are no per-pixel Python loops. Coordinates are pixels, ``x`` to the right and
``y`` down; layers are float32 images of shape [H, W].
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage


def blur(layer: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a [H, W] layer (float32 in, float32 out)."""
    return ndimage.gaussian_filter(
        layer.astype(np.float32, copy=False), sigma, mode="nearest", truncate=3.0
    )


def smoothstep(t: np.ndarray | float) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth S in between (for soft edges)."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> np.ndarray:
    """Normalised elliptical radius: < 1 inside the ellipse, 1 on its outline.

    Parameters
    ----------
    yy, xx : ndarray, broadcastable to [H, W]
        Pixel-centre coordinates.
    cy, cx, ry, rx : float
        Centre and semi-axes (pixels).
    angle : float
        Rotation of the x semi-axis, radians, counter-clockwise on screen.
    """
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u = (dx * c - dy * s) / rx
    v = (dx * s + dy * c) / ry
    return np.sqrt(u * u + v * v)


def noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 1
) -> np.ndarray:
    """Smooth random field, zero mean and unit standard deviation (approximately).

    White noise on a coarse grid of ``cell`` pixels, upsampled bicubically (PIL, fast); octaves
    add finer grids at half the amplitude each (a cheap fractal texture).

    Returns
    -------
    ndarray float32, shape ``shape``
    """
    height, width = shape
    out = np.zeros(shape, np.float32)
    amplitude, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(np.ceil(height / cell)) + 1), max(2, int(np.ceil(width / cell)) + 1)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        coarse = Image.fromarray(grid, mode="F")
        out += amplitude * np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
        total += amplitude**2
        amplitude *= 0.5
        cell = max(cell / 2.0, 1.0)
    return out / np.float32(np.sqrt(total) * _CUBIC_SPREAD)


#: Standard deviation of bicubically upsampled unit white noise (measured; keeps noise() at ~1).
_CUBIC_SPREAD = 0.81


def polylines(
    shape: tuple[int, int], lines: list[tuple[np.ndarray, float, float]], scale: int = 2
) -> np.ndarray:
    """Rasterise thick polylines, anti-aliased by supersampling.

    Parameters
    ----------
    shape : (H, W)
    lines : list of (points, width, value)
        ``points`` is an [K, 2] array of (x, y) pixel coordinates; ``width`` in pixels; ``value``
        in 0..1. Overlapping lines keep the maximum value.
    scale : int
        Supersampling factor.

    Returns
    -------
    ndarray float32, shape [H, W], values 0..1
    """
    height, width = shape
    canvas = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(canvas)
    for points, line_width, value in lines:
        pts = np.asarray(points, np.float64) * scale
        if len(pts) < 2:
            continue
        fill = round(255 * min(max(float(value), 0.0), 1.0))
        w = max(1, round(line_width * scale))
        # Curves are sampled densely, so joints need no filling (PIL's joint="curve" is slow).
        draw.line(pts.ravel().tolist(), fill=fill, width=w)
        if w > 3:  # round caps, so short segments and polyline ends are not square
            r = w / 2.0
            for x, y in (pts[0], pts[-1]):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    return _downsample(canvas, scale)


def segments(
    shape: tuple[int, int],
    starts: np.ndarray,
    ends: np.ndarray,
    widths: np.ndarray,
    values: np.ndarray,
    scale: int = 2,
) -> np.ndarray:
    """Rasterise many straight segments at once (vessel trees): like :func:`polylines` for
    two-point lines, with all coordinate arithmetic vectorised.

    Parameters
    ----------
    shape : (H, W)
    starts, ends : ndarray, shape [N, 2]
        (x, y) end points in pixels.
    widths, values : ndarray, shape [N]
        Width in pixels and value 0..1 of each segment.
    """
    height, width = shape
    canvas = Image.new("L", (width * scale, height * scale), 0)
    pen = ImageDraw.Draw(canvas).draw  # the C drawing object: no per-call Python checks
    coords = (np.concatenate([starts, ends], axis=1) * scale).tolist()
    w = np.maximum(1, np.round(np.asarray(widths) * scale)).astype(int).tolist()
    fill = np.round(255 * np.clip(values, 0, 1)).astype(int).tolist()
    for xy, line_width, ink in zip(coords, w, fill):
        pen.draw_lines(xy, ink, line_width)
    return _downsample(canvas, scale)


def polygons(
    shape: tuple[int, int], shapes: list[tuple[np.ndarray, float]], scale: int = 2
) -> np.ndarray:
    """Rasterise filled polygons ((x, y) vertices [K, 2], value 0..1), anti-aliased."""
    height, width = shape
    canvas = Image.new("L", (width * scale, height * scale), 0)
    draw = ImageDraw.Draw(canvas)
    for points, value in shapes:
        pts = np.asarray(points, np.float64) * scale
        draw.polygon(pts.ravel().tolist(), fill=round(255 * min(max(float(value), 0.0), 1.0)))
    return _downsample(canvas, scale)


def _downsample(canvas: Image.Image, scale: int) -> np.ndarray:
    if scale > 1:
        canvas = canvas.reduce(scale)
    return np.asarray(canvas, np.float32) / 255.0


def bezier(points: np.ndarray, n: int = 24) -> np.ndarray:
    """Sample a Bezier curve of any degree through its control points.

    Parameters
    ----------
    points : ndarray, shape [K, 2]
        Control points (x, y).
    n : int
        Number of samples.

    Returns
    -------
    ndarray float64, shape [n, 2]
    """
    points = np.asarray(points, np.float64)
    t = np.linspace(0.0, 1.0, n)[:, None]
    degree = len(points) - 1
    out = np.zeros((n, 2))
    for k, p in enumerate(points):  # loop over control points only (a handful)
        coeff = _binomial(degree, k) * t**k * (1 - t) ** (degree - k)
        out += coeff * p
    return out


def _binomial(n: int, k: int) -> float:
    out = 1.0
    for i in range(1, k + 1):
        out = out * (n - k + i) / i
    return out


def row_extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leftmost and rightmost ``True`` column of each row (NaN for empty rows).

    Returns
    -------
    first, last : ndarray float64, shape [H]
    """
    any_row = mask.any(axis=1)
    cols = np.arange(mask.shape[1])
    first = np.where(mask, cols, mask.shape[1]).min(axis=1).astype(np.float64)
    last = np.where(mask, cols, -1).max(axis=1).astype(np.float64)
    first[~any_row] = np.nan
    last[~any_row] = np.nan
    return first, last


def max_width(mask: np.ndarray) -> float:
    """Largest horizontal extent (pixels, last - first + 1) of a mask over its rows; 0 if empty."""
    first, last = row_extent(mask)
    widths = last - first + 1
    return float(np.nanmax(widths)) if np.isfinite(widths).any() else 0.0
