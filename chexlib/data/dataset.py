"""The torch Dataset over a CheXpert-format folder (the real CheXpert-v1.0-small or the phantom).

Each item is ``(image, target, mask, index)``:

``image``   float32 [3, S, S]: the grayscale image / 255, repeated to 3 channels (the input
            convention of ImageNet weights) and normalised with ImageNet mean and std
``target``  float32 [14]: 1 positive, 0 negative, after the uncertainty policy
``mask``    float32 [14]: 1 where the label counts in the loss (0 only for uncertain under U-Ignore)
``index``   int: the row's position in :attr:`CheXpertDataset.labels`, so predictions can be
            joined back to the label file with ``labels.iloc[index]``

Images are resized to a square S x S (see :mod:`chexlib.data.images`).

Missing and unreadable images
-----------------------------
* A data root that is not a folder, or an image folder (``<root>/train``, ``<root>/valid``) that
  the served rows need but that does not exist, stops the constructor with
  :class:`~chexlib.errors.MissingFileError` naming the folder.
* Some images missing or unreadable: the constructor warns once
  (:class:`UnreadableImagesWarning`) with how many of the served images could not be read and
  the first few paths, and lists them in :attr:`CheXpertDataset.unreadable`; reading such a row
  raises :class:`~chexlib.errors.MissingFileError` / :class:`~chexlib.errors.ImageFileError`
  naming the file. With a ``cache_dir`` every image was decoded, so missing and corrupt files
  are both known; without one only missing files are found (one ``stat`` per row, ~3 s for
  CheXpert's 224k rows), and a corrupt file raises when its row is read.
* None of the served images readable: the constructor stops with that error, naming the first
  paths.
* An empty label frame or an empty ``indices`` (a filter or split that left nothing) stops with
  :class:`~chexlib.errors.ParameterError` naming the parameter.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from chexlib.data.cache import ImageCache
from chexlib.data.images import check_image_size, load_grayscale, resolve_image_path
from chexlib.data.labels import read_labels
from chexlib.errors import ImageFileError, LabelFileError, MissingFileError, ParameterError
from chexlib.observations import OBSERVATIONS, apply_uncertainty_policy

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

#: How many unreadable images a warning or error lists by path.
SHOW_UNREADABLE = 5


class UnreadableImagesWarning(UserWarning):
    """Some images of a :class:`CheXpertDataset` are missing or corrupt (module docstring)."""


class CheXpertDataset(Dataset):
    """Images and labels of a CheXpert-format folder.

    Parameters
    ----------
    root : str or path-like
        The data root: the folder that holds ``train.csv`` and ``valid.csv``.
    labels : DataFrame or str
        A label frame (as from :func:`chexlib.data.read_labels`), or a split name such as
        ``"train"`` / ``"valid"``, which reads ``root/<split>.csv``.
    image_size : int
        Side S of the square network input.
    policy : {"zeros", "ones", "ignore"}
        Uncertainty policy (:func:`chexlib.observations.apply_uncertainty_policy`).
    cache_dir : str, path-like or None
        None decodes every image on every access; a folder keeps decoded images in an
        :class:`~chexlib.data.cache.ImageCache` (built on first use, covering every row of
        ``labels``, so the training and validation parts of one CSV share a cache).
    indices : array-like of int or None
        Positional rows of ``labels`` this dataset serves (e.g. from
        :func:`chexlib.data.splits.patient_split`); None serves all rows.
    transform : callable or None
        Applied to the normalised image tensor [3, S, S] (e.g. augmentation).
    cache_workers : int
        Worker processes for building the cache (0: build in this process).
    progress : bool
        Show a progress bar while building the cache.

    Attributes
    ----------
    labels : DataFrame
        The full label frame.
    indices : ndarray int64, shape [N]
        Rows of ``labels`` served, item ``i`` is row ``indices[i]``.
    targets, masks : ndarray float32, shape [N, 14]
        Targets and loss masks of the served items, aligned with the items.
    cache : ImageCache or None
    unreadable : dict[int, str]
        Served rows of ``labels`` whose image is known to be unreadable -> the error message
        (naming the file). Without a cache only missing files are known here.

    Raises
    ------
    MissingFileError
        If ``root`` or an image folder the served rows need does not exist, or no served image
        exists.
    ImageFileError
        If none of the served images can be read (some exist but are corrupt; cache only).
    ParameterError
        If ``labels`` has no rows or ``indices`` is empty or out of range.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labels: pd.DataFrame | str = "train",
        image_size: int = 224,
        policy: str = "zeros",
        cache_dir: str | os.PathLike | None = None,
        indices: np.ndarray | list[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_workers: int = 0,
        progress: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(
                f"data root {self.root} is not a folder; expected the folder holding train.csv"
            )
        self.labels = _label_frame(self.root, labels)
        if len(self.labels) == 0:
            raise ParameterError(
                "labels: the label frame has no rows (did a filter leave none?); expected at "
                "least one image"
            )
        self.image_size = check_image_size(image_size)
        self.policy = policy
        self.indices = _check_indices(indices, len(self.labels))
        raw = self.labels[list(OBSERVATIONS)].to_numpy(dtype=np.float64)[self.indices]
        self.targets, self.masks = apply_uncertainty_policy(raw, policy)
        self.transform = transform
        self._paths = self.labels["Path"].astype(str).to_numpy()
        self._check_image_folders()
        self.cache = None
        if cache_dir is not None:
            self.cache = ImageCache.open_or_build(
                self.root,
                self.labels,
                self.image_size,
                cache_dir,
                workers=cache_workers,
                progress=progress,
            )
        self.unreadable: dict[int, str] = {}
        self._report_unreadable()

    @property
    def _source(self) -> str:
        return str(self.labels.attrs.get("source") or "the label frame")

    def _check_image_folders(self) -> None:
        """Stop if a top-level image folder (``train``, ``valid``) of the served rows is absent."""
        values = pd.Series(self._paths[self.indices]).str.replace("\\", "/", regex=False)
        folders = values.str.split("/").str[1]
        for name in folders.dropna().unique():
            folder = self.root / name
            if name in ("", ".", "..") or folder.is_dir():
                continue  # odd values are refused row by row by resolve_image_path
            rows = np.flatnonzero((folders == name).to_numpy())
            raise MissingFileError(
                f"image folder {folder} does not exist: {len(rows)} of the {len(values)} rows of "
                f"{self._source} served here name images in it (first: {values.iloc[rows[0]]!r}); "
                f"expected the images below the data root {self.root}, e.g. "
                f"{self.image_path(int(self.indices[rows[0]]))}"
            )

    def _report_unreadable(self) -> None:
        """Fill :attr:`unreadable`; warn about some unreadable images, stop if none is readable."""
        found: list[tuple[int, str, str, str]] = []  # row, file, error class, message
        for row in np.unique(self.indices).tolist():
            if self.cache is not None:
                entry = self.cache.failed.get(row)
                if entry is not None:
                    found.append((row, entry["path"], entry["error"], entry["message"]))
                continue
            try:
                file = self.image_path(row)
            except LabelFileError as err:
                found.append((row, self._paths[row], "LabelFileError", str(err)))
                continue
            if not file.is_file():
                found.append((row, str(file), "MissingFileError",
                              f"image file {file} does not exist"))
        self.unreadable = {row: message for row, _, _, message in found}
        if not found:
            return
        n = len(np.unique(self.indices))
        shown = ", ".join(
            f"{file} (row {row}, {'missing' if error == 'MissingFileError' else 'unreadable'})"
            for row, file, error, _ in found[:SHOW_UNREADABLE]
        )
        if len(found) > SHOW_UNREADABLE:
            shown += f", and {len(found) - SHOW_UNREADABLE} more"
        if len(found) == n:
            all_missing = all(error == "MissingFileError" for _, _, error, _ in found)
            raise (MissingFileError if all_missing else ImageFileError)(
                f"none of the {n} images of {self._source} served here could be read: {shown}; "
                f"expected image files below the data root {self.root}"
            )
        note = "" if self.cache is not None else (
            " Without cache_dir only missing files are found here; a corrupt file raises "
            "ImageFileError when its row is read."
        )
        warnings.warn(
            f"{len(found)} of {n} images of {self._source} served here could not be read: "
            f"{shown}. Reading one of these rows raises an error naming the file; the rows are "
            f"listed in CheXpertDataset.unreadable.{note}",
            UnreadableImagesWarning,
            stacklevel=3,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def image_path(self, row: int) -> Path:
        """File of row ``row`` of :attr:`labels`."""
        return resolve_image_path(self.root, self._paths[row])

    def grayscale(self, row: int) -> np.ndarray:
        """Decoded, resized image of row ``row`` of :attr:`labels`, uint8 [S, S]."""
        if self.cache is not None:
            return self.cache.image(row)
        return load_grayscale(self.image_path(row), self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        row = int(self.indices[i])
        image = normalize(self.grayscale(row))
        if self.transform is not None:
            image = self.transform(image)
        target = torch.tensor(self.targets[i], dtype=torch.float32)
        mask = torch.tensor(self.masks[i], dtype=torch.float32)
        return image, target, mask, row


def normalize(gray: np.ndarray) -> torch.Tensor:
    """uint8 grayscale [S, S] -> ImageNet-normalised float32 [3, S, S]."""
    x = torch.from_numpy(np.ascontiguousarray(gray)).to(torch.float32).div_(255.0)
    return (x.unsqueeze(0) - _MEAN) / _STD  # broadcasting repeats the channel


def denormalize(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Undo the ImageNet normalisation of one image, for display.

    Parameters
    ----------
    image : Tensor or ndarray, shape [3, H, W]
        A normalised image as the dataset returns it.

    Returns
    -------
    ndarray float32, shape [H, W]
        Grayscale in [0, 1] (the mean of the three de-normalised channels, clipped).
    """
    x = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ParameterError(f"denormalize: expected an image [3, H, W], got shape {x.shape}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    return np.clip((x * std + mean).mean(axis=0), 0.0, 1.0).astype(np.float32)


def _label_frame(root: Path, labels: pd.DataFrame | str) -> pd.DataFrame:
    if isinstance(labels, str):
        return read_labels(root / f"{labels}.csv")
    if not isinstance(labels, pd.DataFrame):
        raise ParameterError(
            f"labels is a {type(labels).__name__}; "
            "expected a DataFrame or a split name like 'train'"
        )
    missing = [c for c in ("Path", *OBSERVATIONS) if c not in labels.columns]
    if missing:
        raise LabelFileError(
            f"the label frame lacks column(s) {missing}; expected read_labels' columns"
        )
    return labels


def _check_indices(indices: np.ndarray | list[int] | None, n: int) -> np.ndarray:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.ndim == 1 and arr.size == 0:
        raise ParameterError(
            "indices is empty (did a split or filter leave no rows?); expected at least one "
            "row position of labels"
        )
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ParameterError(
            f"indices: expected a 1-D array of row positions, got shape {arr.shape} {arr.dtype}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ParameterError(
            f"indices: row positions must be in 0..{n - 1}; "
            f"got values from {arr.min()} to {arr.max()}"
        )
    return arr.astype(np.int64)
