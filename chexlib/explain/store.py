"""The heatmap store of a run folder: one float16 file per (method, image), computed once.

Layout::

    <run dir>/maps/<method>/index.json        {"format": 1, "dtype": "float16",
                                               "classes": [...], "height": H, "width": W}
    <run dir>/maps/<method>/<image id>.npy    float16 [C, H, W], C = len(classes)

``<method>`` is a method of the registry (:mod:`chexlib.methods`) or any other safe file name
(:func:`chexlib.methods.is_safe_name`, the rule every registered name follows); ``<image id>`` is
CheXlocalize's id of the image (``patient64541_study1_view1_frontal``,
:func:`chexlib.masks.chexlocalize_image_id`). The classes are the 14 observations in CheXpert
order unless a subset (still in CheXpert order) is given on a method's first save; every map of a
method has the same classes and size, recorded in its ``index.json``.

Each file is a ``.npy`` followed by a checksum trailer (a tag and the BLAKE2b-128 digest of the
``.npy`` bytes; ``np.load`` reads the file and ignores the trailer), written atomically: a reader
sees the old map, the new one or none. A file whose checksum fails, that does not load, or whose
dtype, shape or values disagree with the index (a torn write after a power cut, flipped bits, a
stray copy) counts as *missing*: it is reported, never used, and :meth:`MapStore.get_or_compute`
recomputes it. A damaged ``index.json`` makes its method's maps unverifiable: they are removed
with a warning and recomputed.

Precision of float16: 11 significant bits, relative error at most 2**-11 (about 5e-4) for
``|value| >= 6.1e-5``; smaller values are subnormal and keep an absolute error of at most 3e-8
(values below 3e-8 become 0). Values beyond float16's range (``|value| > 65504``) are refused,
not clipped: a map that large is a bug upstream, and clipping would hide it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from chexlib.errors import ChexlibError
from chexlib.files import atomic_write_bytes, atomic_write_json
from chexlib.masks import chexlocalize_image_id
from chexlib.methods import definition, is_safe_name
from chexlib.observations import OBSERVATIONS
from chexlib.run import RunFolder

FORMAT = 2  # 2: a checksum trailer after the .npy payload
_CHECKSUM_TAG = b"\nchexlib-blake2b-128:"
TRAILER_SIZE = len(_CHECKSUM_TAG) + 32
FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
_IMAGE_ID_PATTERN = re.compile(r"^patient\d+_study\d+_view\d+_(?:frontal|lateral)$")


class MapNotFoundError(ChexlibError, KeyError):
    """No usable map is stored for a (method, image)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class CorruptMapError(MapNotFoundError):
    """A map file exists but is unreadable or disagrees with its index; counts as missing."""


class MapStoreError(ChexlibError, ValueError):
    """A map, method name or class list given to the store is malformed."""


def _trailer(payload: bytes) -> bytes:
    """The checksum appended to a map file's ``.npy`` bytes (``np.load`` ignores it)."""
    return _CHECKSUM_TAG + hashlib.blake2b(payload, digest_size=16).hexdigest().encode()


def check_method(method: str) -> str:
    """Return ``method`` if it is a safe folder name (:func:`chexlib.methods.is_safe_name`),
    else raise :class:`MapStoreError`."""
    if not is_safe_name(method):
        raise MapStoreError(
            f"method name {method!r} is not a safe file name: expected 1-64 characters from "
            "letters, digits, '_', '.', '+', '-', starting with a letter or digit")
    return method


def image_id(image: str | os.PathLike) -> str:
    """CheXlocalize id of an image path; an id itself is returned unchanged."""
    text = os.fspath(image)
    return text if _IMAGE_ID_PATTERN.match(text) else chexlocalize_image_id(text)


def check_classes(classes: Sequence[str] | None) -> tuple[str, ...]:
    """The class list of a method: default all 14, else a non-empty subset in CheXpert order."""
    if classes is None:
        return OBSERVATIONS
    classes = tuple(classes)
    if not classes:
        raise MapStoreError("classes must not be empty (default: all 14 observations)")
    unknown = [c for c in classes if c not in OBSERVATIONS]
    if unknown:
        raise MapStoreError(
            f"classes {unknown} are not CheXpert observations; expected names from {OBSERVATIONS}")
    positions = [OBSERVATIONS.index(c) for c in classes]
    if positions != sorted(set(positions)):
        raise MapStoreError(
            f"classes must be unique and in CheXpert column order, got {list(classes)}")
    return classes


def _to_numpy(maps) -> np.ndarray:
    # Accept tensors without importing torch here.
    if hasattr(maps, "detach"):
        maps = maps.detach().cpu().numpy()
    return np.asarray(maps)


class MapStore:
    """Heatmaps of one run folder, per method and image (see the module docstring).

    Parameters
    ----------
    run_dir : path
        The run folder; maps live under ``run_dir/maps``.
    durable : bool
        ``fsync`` every map before it replaces the old one (default). ``False`` is faster on slow
        disks; a map torn by a power cut is then detected and recomputed.
    model : str, optional
        Fingerprint of the model the maps explain (:func:`chexlib.checkpoint.weights_fingerprint`),
        recorded in each method's index. Maps of another model (the run was retrained) are
        stale: they read as missing, and the first save under this model removes them.
    """

    def __init__(self, run_dir: str | os.PathLike, durable: bool = True,
                 model: str | None = None):
        self.root = RunFolder(run_dir).maps_dir
        self.durable = durable
        if model is not None and not (isinstance(model, str) and model):
            raise MapStoreError(f"model={model!r}: expected a non-empty fingerprint string")
        self.model = model

    # ---------------------------------------------------------------------------------- paths

    def path(self, method: str, image: str | os.PathLike) -> Path:
        """File of the maps of ``image`` under ``method``."""
        return self.root / check_method(method) / f"{image_id(image)}.npy"

    def _index_path(self, method: str) -> Path:
        return self.root / check_method(method) / "index.json"

    def index(self, method: str) -> dict | None:
        """The index of ``method`` (classes, height, width), or None if it has no maps.

        A damaged index (unreadable, or of another format) leaves its maps unverifiable: they
        are deleted with a warning and count as missing, so they are recomputed, never used.
        """
        path = self._index_path(method)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            self._discard(method, f"it is not readable ({err})")
            return None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("dtype") != "float16":
            found = (doc.get("format"), doc.get("dtype")) if isinstance(doc, dict) else doc
            self._discard(method, f"expected format {FORMAT} and dtype float16, got {found!r}")
            return None
        return doc

    def _discard(self, method: str, why: str) -> None:
        """Remove a method's maps whose index is damaged (they cannot be checked)."""
        folder = self._index_path(method).parent
        maps = list(folder.glob("*.npy"))
        warnings.warn(f"heatmap store: the index of method {method!r} ({folder / 'index.json'}) "
                      f"is damaged: {why}. Its {len(maps)} map(s) cannot be checked and are "
                      "removed; they will be recomputed.", stacklevel=3)
        for old in maps:
            old.unlink(missing_ok=True)
        (folder / "index.json").unlink(missing_ok=True)

    def classes(self, method: str) -> tuple[str, ...]:
        """Class names of the maps of ``method``, in row order."""
        doc = self.index(method)
        if doc is None:
            raise MapNotFoundError(f"no maps stored for method {method!r} under {self.root}")
        return tuple(doc["classes"])

    # ---------------------------------------------------------------------------------- write

    def save(self, method: str, image: str | os.PathLike, maps,
             classes: Sequence[str] | None = None) -> Path:
        """Store the maps of one image, atomically, as float16.

        Parameters
        ----------
        method : str
            Method or composite name (a safe file name).
        image : str or path
            The image's CheXpert path (or its CheXlocalize id).
        maps : ndarray or Tensor, shape [C, H, W]
            One map per class, finite, ``|value| <= 65504``.
        classes : sequence of str, optional
            The C class names (default all 14 in CheXpert order). Must match the method's index
            once the method has maps.

        Returns
        -------
        Path
            The file written.
        """
        path = self.path(method, image)
        classes = check_classes(classes)
        x = self._checked(method, path.stem, _to_numpy(maps), classes)
        self._ensure_index(method, classes, x.shape[1:])
        buffer = io.BytesIO()
        np.save(buffer, x.astype(np.float16), allow_pickle=False)
        payload = buffer.getvalue()
        return atomic_write_bytes(path, payload + _trailer(payload), durable=self.durable)

    def _checked(self, method: str, image: str, x: np.ndarray,
                 classes: tuple[str, ...]) -> np.ndarray:
        where = f"maps of method {method!r}, image {image!r}"
        if x.ndim != 3 or x.shape[0] != len(classes) or 0 in x.shape:
            raise MapStoreError(
                f"{where}: expected shape [C={len(classes)}, H, W], got {list(x.shape)}")
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise MapStoreError(f"{where}: expected a numeric array, got dtype {x.dtype}")
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise MapStoreError(f"{where}: {bad} NaN or infinite values; expected finite maps")
        peak = float(np.abs(x).max())
        if peak > FLOAT16_MAX:
            raise MapStoreError(
                f"{where}: max |value| {peak:.4g} exceeds float16's range ({FLOAT16_MAX:g})")
        return x

    def _ensure_index(self, method: str, classes: tuple[str, ...], size: tuple[int, int]) -> None:
        doc = self.index(method)
        wanted = {"format": FORMAT, "dtype": "float16", "classes": list(classes),
                  "height": int(size[0]), "width": int(size[1]), "model": self.model,
                  "definition": definition(method)}
        if doc is not None and self._stale(doc, method):
            for old in self._index_path(method).parent.glob("*.npy"):
                old.unlink(missing_ok=True)  # maps of another model: never valid again
            doc = None
        if doc is None:
            atomic_write_json(self._index_path(method), wanted, indent=1)
        elif {**doc, "model": self.model, "definition": wanted["definition"]} != wanted:
            raise MapStoreError(
                f"method {method!r} stores classes {doc['classes']} at "
                f"{doc['height']}x{doc['width']}; got classes {list(classes)} at "
                f"{size[0]}x{size[1]} (use another method name, or remove "
                f"{self._index_path(method).parent})")

    # ----------------------------------------------------------------------------------- read

    def load(self, method: str, image: str | os.PathLike) -> np.ndarray:
        """The stored maps of one image.

        Returns
        -------
        ndarray float32, shape [C, H, W]
            Rows in the order of :meth:`classes`.

        Raises
        ------
        MapNotFoundError
            Nothing stored for (method, image).
        CorruptMapError
            (a MapNotFoundError) The file is unreadable or disagrees with the index.
        """
        path = self.path(method, image)
        doc = self.index(method)
        if doc is None or not path.exists():
            raise MapNotFoundError(
                f"no map stored for method {method!r}, image {path.stem!r} (expected {path})")
        if self._stale(doc, method):
            if doc.get("definition") != definition(method):
                raise MapNotFoundError(
                    f"the maps of method {method!r} were computed as {doc.get('definition')!r}, "
                    f"not {definition(method)!r} (an earlier chexlib): stale, to be recomputed")
            raise MapNotFoundError(
                f"the maps of method {method!r} explain model {doc.get('model')!r}, not "
                f"{self.model!r} (the run was retrained): stale, to be recomputed")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CorruptMapError(f"{path} is unreadable: {err}") from None
        payload, trailer = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
        if len(data) <= TRAILER_SIZE or trailer != _trailer(payload):
            raise CorruptMapError(
                f"{path}: its checksum does not match its contents (torn, corrupt or written "
                "by another program)")
        try:
            x = np.load(io.BytesIO(payload), allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise CorruptMapError(f"{path} is unreadable (torn or corrupt): {err}") from None
        expected = (len(doc["classes"]), doc["height"], doc["width"])
        if x.dtype != np.float16 or x.shape != expected:
            raise CorruptMapError(
                f"{path}: expected float16 {list(expected)} as in its index, "
                f"got {x.dtype} {list(x.shape)}")
        x = x.astype(np.float32)  # before the check: numpy's float16 arithmetic is slow
        if not np.isfinite(x).all():
            raise CorruptMapError(f"{path}: contains NaN or infinite values (never saved so)")
        return x

    def _stale(self, doc: dict, method: str) -> bool:
        """Whether an index was written for another model than this store's, or for another
        definition of a registered method (:func:`chexlib.methods.definition`: e.g. LRP maps
        of an earlier chexlib whose BatchNorms were not folded)."""
        other_model = self.model is not None and doc.get("model") != self.model
        return other_model or doc.get("definition") != definition(method)

    def has(self, method: str, image: str | os.PathLike) -> bool:
        """Whether a valid map is stored (a corrupt file counts as absent)."""
        try:
            self.load(method, image)
        except MapNotFoundError:
            return False
        return True

    def methods(self) -> list[str]:
        """Methods with an index in this run folder, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if is_safe_name(p.name) and (p / "index.json").is_file())

    def images(self, method: str) -> list[str]:
        """Image ids with a map file under ``method``, sorted (files are not validated here)."""
        folder = self.root / check_method(method)
        if not folder.is_dir():
            return []
        # Temporary files of atomic writes are hidden (".<name>...tmp"): skip them.
        return sorted(p.stem for p in folder.glob("*.npy") if not p.name.startswith("."))

    def fill(self, method: str, images: Sequence[str | os.PathLike],
             compute: Callable[[list[int]], object], batch_size: int = 16,
             classes: Sequence[str] | None = None) -> int:
        """Compute and store the maps of those ``images`` that have no valid map yet.

        Parameters
        ----------
        images : sequence of image paths or ids
        compute : callable (positions) -> ndarray or Tensor [len(positions), C, H, W]
            Maps of ``images[p]`` for the given positions; called with up to ``batch_size``
            positions at a time, only for missing, corrupt or stale maps.
        classes : sequence of str, optional
            As in :meth:`save`.

        Returns
        -------
        int
            How many images were computed.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise MapStoreError(f"batch_size={batch_size!r}: expected a positive integer")
        missing = [i for i, image in enumerate(images) if not self.has(method, image)]
        for start in range(0, len(missing), batch_size):
            chunk = missing[start:start + batch_size]
            maps = _to_numpy(compute(chunk))
            if len(maps) != len(chunk):
                raise MapStoreError(
                    f"compute returned {len(maps)} maps for {len(chunk)} images of method "
                    f"{method!r}; expected one [C, H, W] map stack per image")
            for position, image_maps in zip(chunk, maps):
                self.save(method, images[position], image_maps, classes=classes)
        return len(missing)

    def get_or_compute(self, method: str, image: str | os.PathLike,
                       compute: Callable[[], object],
                       classes: Sequence[str] | None = None) -> np.ndarray:
        """The stored maps, or ``compute()``'s, stored first, on a miss or a corrupt file.

        Parameters
        ----------
        compute : callable () -> ndarray or Tensor [C, H, W]
            Called only on a miss.
        classes : sequence of str, optional
            As in :meth:`save`.

        Returns
        -------
        ndarray float32, shape [C, H, W]
            Always the stored (float16-rounded) values, so a hit and a miss return the same.
        """
        try:
            return self.load(method, image)
        except MapNotFoundError:
            pass
        self.save(method, image, compute(), classes=classes)
        return self.load(method, image)
