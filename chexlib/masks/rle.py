"""COCO run-length encoding of binary masks, in numpy, identical to pycocotools.

Each mask is a COCO RLE exactly as ``pycocotools.mask.encode`` writes it:

* the mask is read in column-major (Fortran) order, so runs go down the columns;
* ``counts`` alternates run lengths of 0s and 1s and always starts with a run of 0s (which may
  have length 0 when the first pixel is set);
* the run lengths are then compressed to an ASCII string: from the fourth run on, each run is
  stored as its difference to the run two before (a 0-run minus the previous 0-run, a 1-run
  minus the previous 1-run); each signed number is cut into 5-bit groups, least significant
  first, and every group becomes one character ``chr(48 + group | 0x20 if more groups follow)``.
  The last group's bit 0x10 is the sign.

This module implements both directions in numpy, without pycocotools (only the tests use it, as
the reference). The files that hold such masks are :mod:`chexlib.masks.chexlocalize`'s concern.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from chexlib.errors import MaskFormatError

__all__ = ["rle_decode", "rle_encode"]

_OFFSET = 48  # characters start at "0"
_MORE = 0x20  # continuation bit of a character
_SIGN = 0x10  # sign bit of a number's last 5-bit group
_MAX_GROUPS = 13  # 13 * 5 = 65 bits: enough for any int64, so longer numbers are malformed


# --------------------------------------------------------------------------------------------
# run lengths <-> mask
# --------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> np.ndarray:
    """Alternating run lengths (0s first) of a mask read in column-major order, int64 [R]."""
    flat = mask.ravel(order="F").astype(np.int8)
    if flat.size == 0:
        return np.zeros(1, dtype=np.int64)
    # A run ends wherever the value changes; prepending a virtual 0 makes the first run a 0-run,
    # of length 0 when the first pixel is set.
    change = np.flatnonzero(np.diff(flat, prepend=np.int8(0)))
    edges = np.concatenate(([0], change, [flat.size]))
    return np.diff(edges).astype(np.int64)


def _mask_from_runs(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_runs`: bool [H, W] from run lengths summing to H * W."""
    values = (np.arange(runs.size) % 2).astype(bool)  # 0-run, 1-run, 0-run, ...
    flat = np.repeat(values, runs)
    return flat.reshape(shape, order="F")


# --------------------------------------------------------------------------------------------
# run lengths <-> compressed string
# --------------------------------------------------------------------------------------------


def _delta(runs: np.ndarray) -> np.ndarray:
    """Difference of each run to the run two before, from the fourth run on (COCO's rule)."""
    x = runs.astype(np.int64).copy()
    x[3:] -= runs[1:-2]
    return x


def _undelta(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_delta`: runs 0, 1, 2 are stored as they are, later ones as deltas.

    Run ``i >= 3`` is ``x[i] + runs[i - 2]``, so the odd runs are a cumulative sum of the odd
    entries and the even runs from index 2 on are a cumulative sum of the even entries from 2.
    """
    runs = x.copy()
    runs[1::2] = np.cumsum(x[1::2])
    runs[2::2] = np.cumsum(x[2::2])
    return runs


def _compress(runs: np.ndarray) -> str:
    """Run lengths -> COCO's ASCII string, vectorised over all numbers at once."""
    x = _delta(runs)
    # Work only with as many groups as the largest number needs (value bits + 1 sign bit).
    n_max = -(-(int(np.abs(x).max()).bit_length() + 1) // 5)
    shifts = 5 * np.arange(n_max, dtype=np.int64)
    groups = (x[:, None] >> shifts) & 0x1F  # [R, G]; >> on int64 is arithmetic (sign-filling)
    # What is left after group g; shifting an int64 by 63 already leaves only the sign.
    rest = x[:, None] >> np.minimum(shifts + 5, 63)
    # A number ends at the first group after which the rest is pure sign extension of that
    # group's sign bit: 0 for a clear sign bit, -1 for a set one.
    done = np.where(groups & _SIGN, rest == -1, rest == 0)
    n_groups = np.argmax(done, axis=1) + 1
    g = np.arange(n_max)
    used = g[None, :] < n_groups[:, None]
    more = g[None, :] < (n_groups[:, None] - 1)
    chars = (groups | np.where(more, _MORE, 0)) + _OFFSET
    return chars[used].astype(np.uint8).tobytes().decode("ascii")


def _decompress(counts: str | bytes) -> np.ndarray:
    """COCO's ASCII string -> run lengths int64 [R].

    Raises
    ------
    ValueError
        If a character is outside the alphabet, the string ends inside a number, or a number
        has more 5-bit groups than an int64 holds.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - _OFFSET
    if c.size == 0:
        raise ValueError("empty counts string")
    if ((c < 0) | (c > 63)).any():
        bad = raw[int(np.flatnonzero((c < 0) | (c > 63))[0])]
        raise ValueError(f"character {chr(bad)!r} is outside COCO's alphabet '0'..'o'")
    last = (c & _MORE) == 0  # the last group of each number has no continuation bit
    if not last[-1]:
        raise ValueError("the string ends in the middle of a number")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUPS:
        raise ValueError(f"a number has {lengths.max()} groups; at most {_MAX_GROUPS} fit")
    position = np.arange(c.size) - np.repeat(starts, lengths)  # group index inside its number
    parts = (c & 0x1F) << (5 * position)
    x = np.add.reduceat(parts, starts)  # groups occupy disjoint bits, so sum == bitwise or
    negative = (c[ends] & _SIGN) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative], dtype=np.int64)  # sign extension
    return _undelta(x)


# --------------------------------------------------------------------------------------------
# public encode / decode
# --------------------------------------------------------------------------------------------


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a binary mask as a COCO RLE, identical to ``pycocotools.mask.encode``.

    Parameters
    ----------
    mask : ndarray, shape [H, W]
        bool, or integers that are all 0 or 1.

    Returns
    -------
    dict
        ``{"size": [H, W], "counts": str}``; ``counts`` is the compressed string (pycocotools
        returns the same characters as ``bytes``).

    Raises
    ------
    MaskFormatError
        If ``mask`` is not 2-D or holds values other than 0/1.
    """
    mask = _as_binary_mask(mask, "mask")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": _compress(_runs(mask))}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE into a bool mask.

    Parameters
    ----------
    rle : dict
        ``{"size": [H, W], "counts": ...}`` where counts is the compressed string (``str`` or
        ``bytes``) or the uncompressed list of run lengths (0s first, column-major).

    Returns
    -------
    ndarray bool, shape [H, W]

    Raises
    ------
    MaskFormatError
        If ``size`` or ``counts`` is missing or malformed, or the runs do not add up to H * W.
    """
    return _decode_checked(rle, where="RLE")


def _decode_checked(rle: Any, where: str) -> np.ndarray:
    """Validate and decode one RLE; ``where`` names it in error messages."""
    if not isinstance(rle, dict):
        raise MaskFormatError(
            f"{where}: expected an object with 'size' and 'counts', got {type(rle).__name__}"
        )
    for key in ("size", "counts"):
        if key not in rle:
            raise MaskFormatError(
                f"{where}: missing {key!r}; expected {{'size': [h, w], 'counts': ...}}"
            )
    size = rle["size"]
    size = size.tolist() if isinstance(size, np.ndarray) else size
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size
        )
    ):
        raise MaskFormatError(
            f"{where}: 'size' is {size!r}; expected [height, width], two integers >= 0"
        )
    h, w = int(size[0]), int(size[1])
    runs = _runs_from_counts(rle["counts"], where)
    if (runs < 0).any():
        raise MaskFormatError(f"{where}: 'counts' decodes to a negative run length")
    if int(runs.sum()) != h * w:
        raise MaskFormatError(
            f"{where}: the runs in 'counts' add up to {int(runs.sum())} pixels; expected "
            f"h * w = {h} * {w} = {h * w}"
        )
    return _mask_from_runs(runs, (h, w))


def _runs_from_counts(counts: Any, where: str) -> np.ndarray:
    if isinstance(counts, (str, bytes, bytearray)):
        try:
            return _decompress(counts)
        except (ValueError, UnicodeEncodeError) as err:
            raise MaskFormatError(
                f"{where}: 'counts' is not a valid COCO RLE string ({err})"
            ) from err
    if isinstance(counts, (list, tuple, np.ndarray)) and len(counts) > 0:
        arr = np.asarray(counts)
        if arr.ndim == 1 and (np.issubdtype(arr.dtype, np.integer)):
            return arr.astype(np.int64)
    raise MaskFormatError(
        f"{where}: 'counts' is {_short(counts)}; expected a COCO RLE string or a non-empty list "
        "of integer run lengths"
    )


def _as_binary_mask(mask: Any, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise MaskFormatError(f"{name}: expected a 2-D mask [H, W], got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MaskFormatError(f"{name}: expected a bool or 0/1 mask, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise MaskFormatError(f"{name}: expected only 0 and 1, got values {np.unique(arr)[:5]}...")
    return arr.astype(bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
