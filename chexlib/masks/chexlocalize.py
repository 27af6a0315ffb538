"""CheXlocalize's ground-truth files: image ids, reading and writing the JSON, a split's masks.

CheXlocalize (Saporta et al., 2022) stores its ground truth as one JSON object::

    {"patient64541_study1_view1_frontal": {"Cardiomegaly": {"size": [h, w], "counts": "..."}}}

with one COCO RLE (:mod:`chexlib.masks.rle`) per image and observation. This module names the
images as CheXlocalize does (:func:`chexlocalize_image_id`), reads and validates such files,
writes them atomically, and loads the phantom's (or CheXlocalize's) masks of a split.
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
from chexlib.masks.rle import _decode_checked, rle_decode, rle_encode

__all__ = ["chexlocalize_image_id", "load_split_masks", "read_chexlocalize", "write_chexlocalize"]

_IMAGE_ID_PATTERN = re.compile(r"^(patient\d+)/(study\d+)/(view\d+_(?:frontal|lateral))\.jpg$")


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
    return load_mask_file(root, split, "findings"), load_mask_file(root, split, "shortcut")


def load_mask_file(root: str | os.PathLike, split: str,
                   kind: str) -> dict[str, dict[str, np.ndarray]]:
    """Decoded masks of ``masks/<split>_<kind>.json`` (e.g. kind ``drain``); {} without the file."""
    path = Path(root) / "masks" / f"{split}_{kind}.json"
    table = read_chexlocalize(path) if path.is_file() else {}
    return {image_id: {name: rle_decode(rle) for name, rle in per.items()}
            for image_id, per in table.items()}
