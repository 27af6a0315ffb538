"""Where a run's relative paths point, and making sure its data exist.

The notebooks, ``python -m chexlib run`` and ``python -m chexlib.train`` resolve relative
parameter paths (``data_root``, ``run_dir``, ``cache_dir``, a ``weights`` file) against the project
folder, and generate the built-in phantom when the data folder does not hold it yet. Importing this
module imports neither torch nor the notebook machinery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chexlib.errors import MissingFileError

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
    for name in ("data_root", "run_dir", "cache_dir", "weights", "control_run"):
        value = out[name]
        if value and not (name == "weights" and value in ("auto", "imagenet", "none")):
            out[name] = str(resolve_path(value, root))
    return out


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
        # Imported here, not above: the phantom pulls in torch (via chexlib.data), and the runner
        # validates a whole parameter set before anything heavy is loaded.
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
            p_shortcut_ap=params["phantom_marker_rate_ap"],
            p_shortcut_pa=params["phantom_marker_rate_pa"],
            p_drain=params["phantom_drain_rate"],
            p_drain_valid=params["phantom_drain_rate_valid"],
            p_drain_other=params["phantom_drain_rate_other"],
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
