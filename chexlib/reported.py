"""The reported images of a run: what the explanation notebooks and the browser look at.

Notebook 03 leaves, for the reported split (``valid.csv``), the predicted probabilities, the
operating thresholds and the outcome (TP/FP/FN/TN) of every (image, observation).
:class:`ReportedImages` joins them with the images and, where the data has them, the ground-truth
masks (the phantom's findings and its planted shortcut; CheXlocalize's annotations for the real
data), all in the model's square input frame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexlib import artefacts
from chexlib.cases import pick_by_outcome
from chexlib.data.dataset import CheXpertDataset, normalize
from chexlib.errors import LabelFileError
from chexlib.masks import chexlocalize_image_id, load_mask_file, load_split_masks, resize_mask
from chexlib.observations import OBSERVATIONS, observation_index
from chexlib.run import RunFolder


class ReportedImages:
    """The reported split of a run with its predictions, thresholds, outcomes and masks.

    Parameters
    ----------
    run_dir : path
        The run folder holding notebook 03's ``predictions.csv``, ``thresholds.json`` and
        ``outcomes.csv``.
    data_root : path
        The data folder holding ``valid.csv`` (and ``masks/`` if any).
    image_size : int
        The model's input size: images and masks come in this square frame.
    policy : str
        Uncertainty policy of the labels (as in training).
    cache_dir : path, optional
        Image cache folder (as for :class:`~chexlib.data.CheXpertDataset`).

    Attributes
    ----------
    dataset : CheXpertDataset
        ``valid.csv``; row ``i`` here is row ``i`` of every array below.
    probs, labels : ndarray [N, 14]
        Predicted probabilities and labels (after the uncertainty policy).
    thresholds : ndarray [14]
    outcomes : DataFrame
        ``Path`` and one column per observation with "TP", "FP", "FN" or "TN".

    Raises
    ------
    LabelFileError
        ``predictions.csv`` or ``outcomes.csv`` lists other images than ``valid.csv`` (the data
        changed since notebook 03 ran: rerun it).
    MissingFileError
        A file of notebook 03 is missing.
    """

    def __init__(self, run_dir: str | os.PathLike, data_root: str | os.PathLike,
                 image_size: int, policy: str = "zeros",
                 cache_dir: str | os.PathLike | None = None) -> None:
        run = RunFolder(run_dir)
        self.dataset = CheXpertDataset(data_root, "valid", image_size=image_size, policy=policy,
                                       cache_dir=cache_dir, progress=False)
        paths = self.dataset.labels["Path"].astype(str).tolist()
        predicted, _, self.probs = artefacts.read_predictions(run.predictions)
        self.outcomes = artefacts.read_outcomes(run.outcomes)
        for path, listed in ((run.predictions, predicted),
                             (run.outcomes, self.outcomes["Path"].tolist())):
            _check_same_images(path, listed, paths, Path(data_root) / "valid.csv")
        self.labels = self.dataset.targets
        self.thresholds = artefacts.read_thresholds(run.thresholds)
        self.image_size = int(image_size)
        self._findings, self._shortcut = load_split_masks(data_root, "valid")
        self._drain = load_mask_file(data_root, "valid", "drain")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def paths(self) -> list[str]:
        """The ``Path`` column of ``valid.csv``."""
        return self.dataset.labels["Path"].astype(str).tolist()

    def image_id(self, row: int) -> str:
        """CheXlocalize id of row ``row`` (the heatmap store's file name)."""
        return chexlocalize_image_id(self.paths[row])

    def grayscale(self, row: int) -> np.ndarray:
        """The radiograph as the model sees it, uint8 [S, S]."""
        return self.dataset.grayscale(row)

    def images(self, rows) -> torch.Tensor:
        """Normalised model inputs of ``rows``, [len(rows), 3, S, S]."""
        return torch.stack([normalize(self.grayscale(int(r))) for r in rows])

    def outline(self, row: int, observation: str) -> np.ndarray | None:
        """Ground-truth mask of ``observation`` on row ``row`` in the [S, S] frame, or None.

        ``observation`` may also be ``"shortcut"`` (the phantom's planted marker) or
        ``"drain"`` (its planted chest drain).
        """
        if observation in ("shortcut", "drain"):  # whatever the file names it: their union
            source = self._shortcut if observation == "shortcut" else self._drain
            masks = list(source.get(self.image_id(row), {}).values())
            mask = np.logical_or.reduce(masks) if masks else None
        else:
            mask = self._findings.get(self.image_id(row), {}).get(observation)
        if mask is None:
            return None
        return resize_mask(mask, (self.image_size, self.image_size))

    def drains(self) -> np.ndarray:
        """Whether each reported image carries the phantom's chest drain, bool [N]."""
        return np.array([self.image_id(r) in self._drain for r in range(len(self))], dtype=bool)

    def has_masks(self) -> bool:
        """Whether the data has any ground-truth finding masks."""
        return bool(self._findings)

    def outcome(self, row: int, observation: str) -> str:
        return str(self.outcomes.iloc[row][observation])

    def pick(self, observation: str, outcome: str, n: int) -> list[int]:
        """Up to ``n`` rows with this outcome for ``observation``, most confident first."""
        return pick_by_outcome(self.outcomes, observation, outcome, n, probs=self.probs)

    def example_row(self, observation: str) -> int:
        """A row to show ``observation`` on: its most confident true positive, else false
        negative, else false positive, else row 0."""
        for kind in ("TP", "FN", "FP"):
            rows = self.pick(observation, kind, 1)
            if rows:
                return rows[0]
        return 0

    def prediction_text(self, row: int, observation: str) -> str:
        """Label, then the prediction against its threshold, e.g. ``label positive · predicted
        0.10 < threshold 0.15`` (positive iff probability >= threshold): the label and the model's
        call are never confused."""
        j = observation_index(observation)
        label = {1.0: "positive", 0.0: "negative"}.get(float(self.labels[row, j]), "?")
        p, t = float(self.probs[row, j]), float(self.thresholds[j])
        return f"label {label} · predicted {p:.2f} {'≥' if p >= t else '<'} threshold {t:.2f}"

    def title(self, row: int, observation: str) -> str:
        """One-line description: image, label, probability against threshold, and outcome."""
        return (f"{self.image_id(row)} · {observation}: {self.prediction_text(row, observation)}"
                f" → {self.outcome(row, observation)}")

    def table(self, row: int) -> pd.DataFrame:
        """Every observation of row ``row``: label, probability, threshold, outcome."""
        return pd.DataFrame({
            "label": self.labels[row], "probability": self.probs[row],
            "threshold": self.thresholds,
            "outcome": [self.outcome(row, name) for name in OBSERVATIONS],
        }, index=list(OBSERVATIONS))


def _check_same_images(path: Path, listed: list[str], expected: list[str], source: Path) -> None:
    if listed == expected:
        return
    if len(listed) != len(expected):
        detail = f"{len(listed)} images, {source} has {len(expected)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(listed, expected)) if a != b)
        detail = f"line {i + 2} is {listed[i]!r}, {source} line {i + 2} is {expected[i]!r}"
    raise LabelFileError(f"{path}: does not match the reported split ({detail}); "
                         "the data changed since notebook 03 ran: rerun notebook 03")
