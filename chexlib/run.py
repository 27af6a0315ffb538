"""The run folder: the one place that names every file of a run.

A run folder is the hand-off between the notebooks of the series (and ``python -m chexlib.train``,
the heatmap browser, the benchmarks). Every module takes its paths from a :class:`RunFolder`, so a
file's name is written here and nowhere else::

    runs/<name>/
      params.yaml                 the resolved parameters: the single record of a run
      notebooks/0N_*.ipynb        the executed notebooks
      figures/<name>.png          figures;   tables/<name>.csv   tables
      checkpoint.pt               the best checkpoint;   checkpoint_last.pt   the resume point
      history.csv  train.log  train_result.json
      predictions.csv  thresholds.json  outcomes.csv  metrics.json
      maps/<method>/              stored heatmaps (index.json + one .npy per image)
      .chexlib-run.lock           held while a series or a training job writes here
      .jupyter/                   the kernelspec the runner installs

Importing this module does not import torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chexlib.errors import ParameterError
from chexlib.files import atomic_write_bytes


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (nothing is created by naming a path).

    Parameters
    ----------
    path : path-like
        The run folder, e.g. ``runs/default``.
    """

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    # -- what the runner writes ------------------------------------------------------------
    @property
    def params(self) -> Path:
        """``params.yaml``: the resolved parameters of the run."""
        return self.path / "params.yaml"

    @property
    def notebooks_dir(self) -> Path:
        return self.path / "notebooks"

    def notebook(self, name: str) -> Path:
        """The executed copy of notebook ``name`` (``04_lrp.ipynb``)."""
        return self.notebooks_dir / name

    @property
    def jupyter_dir(self) -> Path:
        """Where the runner installs its kernelspec (put first on ``JUPYTER_PATH``)."""
        return self.path / ".jupyter"

    @property
    def lock(self) -> Path:
        """The lock file held while a series or a training job writes here."""
        return self.path / ".chexlib-run.lock"

    # -- what the notebooks save -----------------------------------------------------------
    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    def figure(self, name: str) -> Path:
        """``figures/<name>.png``."""
        return self.figures_dir / f"{name}.png"

    @property
    def tables_dir(self) -> Path:
        return self.path / "tables"

    def table(self, name: str) -> Path:
        """``tables/<name>.csv``."""
        return self.tables_dir / f"{name}.csv"

    # -- training (notebook 02, python -m chexlib.train) -------------------------------------
    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: the best checkpoint (by internal-validation AUROC)."""
        return self.path / "checkpoint.pt"

    @property
    def last_checkpoint(self) -> Path:
        """``checkpoint_last.pt``: the resume point."""
        return self.path / "checkpoint_last.pt"

    @property
    def history(self) -> Path:
        """``history.csv``: one row per epoch."""
        return self.path / "history.csv"

    @property
    def train_log(self) -> Path:
        return self.path / "train.log"

    @property
    def train_result(self) -> Path:
        """``train_result.json``: how a training job ended (status, timing, paths)."""
        return self.path / "train_result.json"

    # -- evaluation (notebook 03) --------------------------------------------------------------
    @property
    def predictions(self) -> Path:
        return self.path / "predictions.csv"

    @property
    def thresholds(self) -> Path:
        return self.path / "thresholds.json"

    @property
    def outcomes(self) -> Path:
        return self.path / "outcomes.csv"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    # -- explanations (notebooks 04-06, the browser) -------------------------------------------
    @property
    def maps_dir(self) -> Path:
        return self.path / "maps"

    def maps(self, method: str) -> Path:
        """``maps/<method>/``: the stored maps of one explanation method."""
        return self.maps_dir / method

    def read_params(self) -> dict[str, Any]:
        """The parameters recorded in ``params.yaml``; empty when there is none.

        Raises
        ------
        ParameterError
            When the file is not a YAML mapping; the message names the file.
        """
        if not self.params.is_file():
            return {}
        try:
            values = yaml.safe_load(self.params.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ParameterError(f"{self.params}: not valid YAML ({err})") from err
        if not isinstance(values, dict):
            raise ParameterError(f"{self.params}: expected a mapping of parameter names to values")
        return values

    def write_params(self, params: dict[str, Any]) -> Path:
        """Write ``params.yaml`` (atomically; names in the order given)."""
        return atomic_write_bytes(self.params, yaml.safe_dump(params, sort_keys=False).encode())
