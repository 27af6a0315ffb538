"""Find and decode the images of a CheXpert-format folder.

Conventions
-----------
* The *data root* is the folder that holds ``train.csv``. A CSV ``Path`` starts with the dataset
  folder name (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), so a row's
  image is ``root / <Path without its first component>``. This works wherever the folder was
  unpacked or renamed to, for the real data and for the phantom (``CheXphantom-v1.0/...``).
* Every image is resized to a square ``S x S``, ignoring its aspect ratio, as the CheXpert paper
  did (320 x 320). The small release's images are about 320 x 390, so anatomy is squeezed
  slightly along the long side; every model, heatmap and mask in chexlib uses this same frame.
* Resizing uses PIL's bilinear filter, which widens its support when shrinking, i.e. it
  antialiases when downsampling.

Damaged files
-------------
A missing file raises :class:`~chexlib.errors.MissingFileError`; a file that is not an image, or
is truncated (a half-copied JPEG, a download padded with zeros), raises
:class:`~chexlib.errors.ImageFileError`; both name the file. This holds even if other code in
the process has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` (which makes PIL pad a
truncated image with gray): chexlib turns it off while it decodes and restores it afterwards.
Not detectable: bytes damaged *inside* a JPEG's compressed data of the right length. JPEG has no
checksum and libjpeg decodes such a file with visible artefacts, without an error.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageFile

from chexlib.errors import ImageFileError, LabelFileError, MissingFileError, ParameterError

#: Recorded in the image cache's key: change it if :func:`load_grayscale` changes its output.
RESIZE_METHOD = "PIL convert('L') + resize((S, S), BILINEAR)"


def resolve_image_path(root: str | os.PathLike, path_value: str) -> Path:
    """File of one CSV ``Path`` value below the data root.

    Parameters
    ----------
    root : str or path-like
        The folder that holds ``train.csv`` / ``valid.csv``.
    path_value : str
        The ``Path`` cell, e.g.
        ``"CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"``.

    Returns
    -------
    Path
        ``root / "valid/patient64541/study1/view1_frontal.jpg"`` for the example.

    Raises
    ------
    LabelFileError
        If the value is absolute, contains ``..`` or has fewer than two components.
    """
    parts = PurePosixPath(str(path_value).replace("\\", "/")).parts
    if len(parts) < 2 or parts[0] == "/" or ".." in parts:
        raise LabelFileError(
            f"image Path {path_value!r}: expected a relative path '<dataset folder>/<split>/...' "
            "without '..'"
        )
    return Path(root).joinpath(*parts[1:])


def check_image_size(image_size: object) -> int:
    """Return ``image_size`` as an int, or raise :class:`ParameterError` if it is not >= 1."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, numbers.Integral)
        or int(image_size) < 1
    ):
        raise ParameterError(f"image_size is {image_size!r}; expected a positive integer")
    return int(image_size)


def read_radiograph(path: str | os.PathLike) -> np.ndarray:
    """Decode an image fully into 8-bit grayscale at its own size (for display and masks).

    Returns
    -------
    ndarray uint8, shape [H, W]

    Raises
    ------
    MissingFileError, ImageFileError
        As :func:`load_grayscale`.
    """
    return np.array(_open_gray(Path(path)), dtype=np.uint8)


_strict_lock = threading.Lock()
_strict_users = 0
_saved_load_truncated = False


@contextmanager
def _refuse_truncated() -> Iterator[None]:
    """Keep ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` False while chexlib decodes.

    The flag is a process-wide global that other libraries may turn on. Decodes in several
    threads share one "off" period: the first to enter saves the caller's value, the last to
    leave restores it.
    """
    global _strict_users, _saved_load_truncated
    with _strict_lock:
        if _strict_users == 0:
            _saved_load_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        _strict_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _strict_lock:
            _strict_users -= 1
            if _strict_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _saved_load_truncated


def _open_gray(path: Path) -> Image.Image:
    try:
        with _refuse_truncated(), Image.open(path) as img:
            img.load()  # decode every byte now, so truncation is caught here and not later
            return img.convert("L")
    except FileNotFoundError as err:
        raise MissingFileError(f"image file {path} does not exist") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageFileError(f"image file {path} is corrupt or not an image ({err})") from err


def load_grayscale(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Decode an image fully, convert it to 8-bit grayscale and resize it to a square.

    Parameters
    ----------
    path : str or path-like
        An image file PIL can read (CheXpert: 8-bit grayscale JPEG).
    image_size : int
        Side S of the output.

    Returns
    -------
    ndarray uint8, shape [S, S]

    Raises
    ------
    MissingFileError
        If the file does not exist.
    ImageFileError
        If the file is not an image, or is corrupt or truncated. Truncated JPEGs are errors,
        even where other code has set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (module
        docstring).
    ParameterError
        If ``image_size`` is not a positive integer.
    """
    image_size = check_image_size(image_size)
    return square_grayscale(_open_gray(Path(path)), image_size)


def square_grayscale(gray: Image.Image | np.ndarray, image_size: int) -> np.ndarray:
    """An 8-bit grayscale image resized to the model's square frame, as every loaded image is.

    Images made in memory (the phantom's counterfactuals) go through this same resize.
    """
    if isinstance(gray, np.ndarray):
        gray = Image.fromarray(np.asarray(gray, dtype=np.uint8), mode="L")
    resized = gray.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # a writable copy (asarray would be read-only)
