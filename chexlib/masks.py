"""Ground-truth masks in CheXlocalize's JSON format (COCO run-length encoding).

CheXlocalize (Saporta et al., 2022) stores its ground truth as one JSON object::

    {"patient64541_study1_view1_frontal": {"Cardiomegaly": {"size": [h, w], "counts": "..."}}}

Each mask is a COCO RLE exactly as ``pycocotools.mask.encode`` writes it:

* the mask is read in column-major (Fortran) order, so runs go down the columns;
* ``counts`` alternates run lengths of 0s and 1s and always starts with a run of 0s (which may
  have length 0 when the first pixel is set);
* the run lengths are then compressed to an ASCII string: from the fourth run on, each run is
  stored as its difference to the run two before (a 0-run minus the previous 0-run, a 1-run
  minus the previous 1-run); each signed number is cut into 5-bit groups, least significant
  first, and every group becomes one character ``chr(48 + group | 0x20 if more groups follow)``.
  The last group's bit 0x10 is the sign.

This module implements both directions in numpy, without pycocotools, and reads and writes the
JSON files. pycocotools is only used by the tests, as the reference.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from chexlib.errors import MaskFormatError, MissingFileError
from chexlib.files import atomic_write_json

_OFFSET = 48  # characters start at "0"
_MORE = 0x20  # continuation bit of a character
_SIGN = 0x10  # sign bit of a number's last 5-bit group
_MAX_GROUPS = 13  # 13 * 5 = 65 bits: enough for any int64, so longer numbers are malformed
_IMAGE_ID_PATTERN = re.compile(r"^(patient\d+)/(study\d+)/(view\d+_(?:frontal|lateral))\.jpg$")


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


# --------------------------------------------------------------------------------------------
# CheXlocalize JSON files
# --------------------------------------------------------------------------------------------


def chexlocalize_image_id(path: str) -> str:
    """CheXlocalize's image id of a CheXpert image path.

    Parameters
    ----------
    path : str
        A CheXpert ``Path`` value, with or without the dataset folder in front, e.g.
        ``"CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"``.

    Returns
    -------
    str
        ``"patient64541_study1_view1_frontal"``: patient, study and view joined by ``_``.

    Raises
    ------
    MaskFormatError
        If the path does not end in ``patientN/studyN/viewN_<frontal|lateral>.jpg``.
    """
    tail = "/".join(PurePosixPath(str(path).replace("\\", "/")).parts[-3:])
    match = _IMAGE_ID_PATTERN.match(tail)
    if match is None:
        raise MaskFormatError(
            f"image path {path!r} does not end in 'patientN/studyN/viewN_<frontal|lateral>.jpg'"
        )
    return "_".join(match.groups())


def write_chexlocalize(
    path: str | os.PathLike, masks: dict[str, dict[str, np.ndarray | dict[str, Any]]]
) -> None:
    """Write ground-truth masks as a CheXlocalize JSON file.

    The file is written to a temporary name in the same folder and renamed over ``path``, so a
    reader never sees a half-written file. Parent folders are created.

    Parameters
    ----------
    path : str or path-like
        The JSON file to write.
    masks : dict
        image id -> observation name -> bool mask [H, W] or an RLE dict (validated, and written
        with a string ``counts``).

    Raises
    ------
    MaskFormatError
        If an entry is neither a 2-D 0/1 mask nor a valid RLE; the message names the image id
        and the observation.
    """
    path = Path(path)
    doc = {}
    for image_id, per_class in masks.items():
        if not isinstance(per_class, dict):
            raise MaskFormatError(f"masks[{image_id!r}]: expected a dict observation -> mask")
        doc[str(image_id)] = {
            str(name): _entry_for_json(value, f"masks[{image_id!r}][{name!r}]")
            for name, value in per_class.items()
        }
    atomic_write_json(path, doc)


def _entry_for_json(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        _decode_checked(value, where)
        counts = value["counts"]
        if isinstance(counts, (bytes, bytearray)):
            counts = bytes(counts).decode("ascii")
        elif not isinstance(counts, str):
            # Uncompressed run lengths are re-encoded so every file uses the compact string.
            return rle_encode(_decode_checked(value, where))
        return {"size": [int(v) for v in value["size"]], "counts": counts}
    try:
        return rle_encode(value)
    except MaskFormatError as err:
        raise MaskFormatError(f"{where}: {err}") from err


def read_chexlocalize(path: str | os.PathLike) -> dict[str, dict[str, dict[str, Any]]]:
    """Read and validate a CheXlocalize ground-truth JSON file.

    Every entry is fully decoded once to check it; the RLEs are returned as they are (decode
    one with :func:`rle_decode` when it is needed).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict
        image id -> observation name -> ``{"size": [H, W], "counts": str}``.

    Raises
    ------
    MissingFileError
        If the file does not exist.
    MaskFormatError
        If the file is not JSON, not an object of objects, or an entry has no ``size`` /
        ``counts``, undecodable counts, or runs that do not add up to H * W. The message names
        the file, the image id and the observation.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"mask file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MaskFormatError(f"{path}: not a valid JSON file ({err})") from err
    if not isinstance(doc, dict):
        raise MaskFormatError(f"{path}: expected a JSON object image id -> observation -> RLE")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for image_id, per_class in doc.items():
        if not isinstance(per_class, dict):
            raise MaskFormatError(
                f"{path}, image {image_id!r}: expected an object observation -> RLE, "
                f"got {type(per_class).__name__}"
            )
        out[image_id] = {}
        for name, rle in per_class.items():
            where = f"{path}, image {image_id!r}, observation {name!r}"
            _decode_checked(rle, where)
            out[image_id][name] = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]}
    return out


def load_split_masks(
    root: str | os.PathLike, split: str
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Decoded ground-truth masks of one split of a data folder, if it has any.

    The phantom writes ``masks/<split>_findings.json`` (one mask per drawn finding) and
    ``masks/<split>_shortcut.json`` (its planted "PORTABLE" marker). The real CheXpert has
    neither; CheXlocalize's annotations can be put there under the same name.

    Returns
    -------
    findings, shortcut : dict
        image id (:func:`chexlocalize_image_id`) -> name -> bool mask [H, W]; empty dicts when
        the file does not exist.
    """
    out = []
    for kind in ("findings", "shortcut"):
        path = Path(root) / "masks" / f"{split}_{kind}.json"
        table = read_chexlocalize(path) if path.is_file() else {}
        out.append({image_id: {name: rle_decode(rle) for name, rle in per.items()}
                    for image_id, per in table.items()})
    return out[0], out[1]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a boolean mask [H, W] to ``shape`` (the model's square input frame).

    A target pixel is inside when at least half of the source area it covers is inside
    (area interpolation of the 0/1 mask, thresholded at 0.5), so thin structures are neither
    lost nor inflated by the change of resolution.
    """
    from PIL import Image

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise MaskFormatError(f"resize_mask: expected a 2-D mask, got shape {mask.shape}")
    resized = Image.fromarray(mask.astype(np.float32)).resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(resized) >= 0.5
