"""What every notebook does first: validate its parameters, find its run folder and data.

A notebook's setup cell is one call::

    session = chexlib.session.start(chexlib.params.collect(globals()))

which validates the parameters, resolves relative paths against the project folder, creates the
run folder (``figures/``, ``tables/``), makes sure the data exist (generating the phantom when it
is missing), and seeds every random number generator. Figures and tables are saved through the
session so that they land in the run folder, written atomically.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chexlib.errors import MissingFileError
from chexlib.files import atomic_write_bytes
from chexlib.params import validate
from chexlib.runlock import check_free

#: Environment variable that fixes the folder relative paths resolve against.
ROOT_ENV = "CHEXLIB_ROOT"


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder relative parameter paths resolve against.

    ``$CHEXLIB_ROOT`` when set; otherwise the nearest folder at or above ``start`` (default: the
    working directory) that holds both ``pyproject.toml`` and ``notebooks/`` (the repository, so a
    notebook opened from ``notebooks/`` finds ``data/`` and ``runs/``); otherwise ``start``.
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return here


def resolve_path(value: str, root: Path) -> Path:
    """An absolute path: ``value`` itself when absolute, else ``root / value``."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path)


def absolute_paths(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """A copy of ``params`` whose path parameters are absolute (relative ones resolve at ``root``)."""
    out = dict(params)
    for name in ("data_root", "run_dir", "cache_dir", "weights"):
        value = out[name]
        if value and not (name == "weights" and value in ("auto", "imagenet", "none")):
            out[name] = str(resolve_path(value, root))
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch deterministic on the CPU."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def ensure_data(params: dict[str, Any], data_root: Path) -> Path:
    """Make sure the data set exists; generate the phantom when it is missing.

    Returns
    -------
    Path
        The data root (the folder holding ``train.csv`` and ``valid.csv``).

    Raises
    ------
    MissingFileError
        For ``dataset: chexpert`` when the folder or its CSVs are missing; the message says how
        to obtain the data.
    """
    if params["dataset"] == "phantom":
        from chexlib.phantom import generate

        # A folder that is already a phantom (complete or interrupted) is regenerated when the
        # phantom parameters change; any other non-empty folder is refused by generate().
        is_phantom = any((data_root / n).is_file() for n in ("phantom.json", ".phantom-partial"))
        generate(
            data_root,
            n_train=params["phantom_n_train"],
            n_valid=params["phantom_n_valid"],
            seed=params["phantom_seed"],
            overwrite=is_phantom,
        )
        return data_root
    for name in ("train.csv", "valid.csv"):
        if not (data_root / name).is_file():
            raise MissingFileError(
                f"{data_root / name} does not exist. The real CheXpert data cannot be shipped: "
                "register at https://stanfordmlgroup.github.io/competitions/chexpert/, download "
                "CheXpert-v1.0-small, unpack it so that this folder holds train.csv, valid.csv, "
                "train/ and valid/, or set data_root to where it is."
            )
    return data_root


@dataclass
class Session:
    """Paths and parameters of one notebook run. Create it with :func:`start`."""

    params: dict[str, Any]
    root: Path
    run_dir: Path
    data_root: Path
    cache_dir: Path

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def tables_dir(self) -> Path:
        return self.run_dir / "tables"

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``<run>/figures/<name>.png`` (atomically)."""
        import io

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        path = self.figures_dir / f"{name}.png"
        atomic_write_bytes(path, buf.getvalue())
        return path

    def save_images(self, images, names, folder: str) -> list[Path]:
        """Save grayscale images [H, W] as ``<run>/figures/<folder>/<name>.png`` (atomically)."""
        import io

        from PIL import Image

        paths = []
        for image, name in zip(images, names):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
            paths.append(atomic_write_bytes(self.figures_dir / folder / f"{name}.png", buf.getvalue()))
        return paths

    def save_table(self, df, name: str) -> Path:
        """Save a DataFrame as ``<run>/tables/<name>.csv`` (atomically)."""
        path = self.tables_dir / f"{name}.csv"
        atomic_write_bytes(path, df.to_csv().encode("utf-8"))
        return path


def start(params: dict[str, Any]) -> Session:
    """Validate the parameters, prepare the run folder and the data, seed everything.

    Parameters
    ----------
    params : dict
        The notebook's parameters, e.g. ``chexlib.params.collect(globals())``.
    """
    root = project_root()
    params = absolute_paths(validate(params, source="notebook parameters"), root)
    run_dir, data_root = Path(params["run_dir"]), Path(params["data_root"])
    cache_dir = Path(params["cache_dir"]) if params["cache_dir"] else data_root / ".cache"
    check_free(run_dir)  # a series or training job writing there now: stop before touching it
    for sub in ("figures", "tables"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    ensure_data(params, data_root)
    seed_everything(params["seed"])
    return Session(params=params, root=root, run_dir=run_dir, data_root=data_root,
                   cache_dir=cache_dir)
