"""What every notebook does first: its parameters, its run folder, its data, its trained model.

A notebook's parameters cell declares only the names that notebook reads; the rest of the run's
parameters come from the run folder's ``params.yaml`` (written by ``python -m chexlib run``, the
single record of a run; schema defaults where a run folder has none yet). The setup cell is one
call. Notebooks 01 and 02::

    session = start(collect(globals()))

validates the parameters, resolves relative paths against the project folder, creates the run
folder (``figures/``, ``tables/``), makes sure the data exist (generating the phantom when it is
missing), and seeds every random number generator. Notebooks 03-06::

    session = open_run(collect(globals()))

does the same and loads the run's trained model on its device; ``session.reported`` (the
reported images of notebook 03) and ``session.store`` (the heatmap store) open on first use.
:meth:`chexlib.browser.HeatmapBrowser.from_run` opens a run folder the same way. Figures and
tables are saved through the session, so that they land in the run folder, written atomically.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from chexlib.checkpoint import model_from_checkpoint, weights_fingerprint
from chexlib.explain.store import MapStore
from chexlib.files import atomic_write_bytes
from chexlib.errors import MissingFileError
from chexlib.params import SCHEMA, validate, validate_partial
from chexlib.project import absolute_paths, ensure_data, project_root, resolve_path
from chexlib.reported import ReportedImages
from chexlib.rng import seed_everything
from chexlib.run import RunFolder
from chexlib.runlock import check_free
from chexlib.device import select_device


@dataclass
class Session:
    """Parameters and paths of one notebook run. Create it with :func:`start`."""

    params: dict[str, Any]
    root: Path
    run: RunFolder
    data_root: Path
    cache_dir: Path

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def figures_dir(self) -> Path:
        return self.run.figures_dir

    @property
    def tables_dir(self) -> Path:
        return self.run.tables_dir

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``<run>/figures/<name>.png`` (atomically)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        return atomic_write_bytes(self.run.figure(name), buf.getvalue())

    def save_images(self, images, names, folder: str) -> list[Path]:
        """Save grayscale images [H, W] as ``<run>/figures/<folder>/<name>.png`` (atomically)."""
        paths = []
        for image, name in zip(images, names):
            buf = io.BytesIO()
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
            paths.append(atomic_write_bytes(self.run.figure(f"{folder}/{name}"), buf.getvalue()))
        return paths

    def save_table(self, df, name: str) -> Path:
        """Save a DataFrame as ``<run>/tables/<name>.csv`` (atomically)."""
        return atomic_write_bytes(self.run.table(name), df.to_csv().encode("utf-8"))


def run_parameters(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """A notebook's own ``values`` over the rest of its run's parameters, complete and absolute.

    The run folder is ``values["run_dir"]`` (default: the schema's). Names the notebook does not
    declare take the values recorded in that folder's ``params.yaml``, else the defaults.

    Raises
    ------
    ParameterError
        A value of the notebook or of ``params.yaml`` is not allowed (the message names which).
    """
    declared = validate_partial(values, source="notebook parameters")
    run = RunFolder(resolve_path(declared.get("run_dir", SCHEMA["run_dir"].default), root))
    recorded = validate(run.read_params(), source=str(run.params))
    return absolute_paths(validate({**recorded, **declared}, source="notebook parameters"), root)


def start(values: dict[str, Any]) -> Session:
    """Validate the parameters, prepare the run folder and the data, seed everything.

    Parameters
    ----------
    values : dict
        The notebook's parameters, e.g. ``chexlib.params.collect(globals())``: only the names its
        parameters cell declares; the others come from the run folder's ``params.yaml``.
    """
    root = project_root()
    params = run_parameters(values, root)
    session = _session(params, root)
    check_free(session.run_dir)  # a series or training job writing there now: stop before touching it
    for folder in (session.run.figures_dir, session.run.tables_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _record(session.run, params)
    ensure_data(params, session.data_root)
    seed_everything(params["seed"])
    return session


def _session(params: dict[str, Any], root: Path) -> Session:
    data_root = Path(params["data_root"])
    cache_dir = Path(params["cache_dir"]) if params["cache_dir"] else data_root / ".cache"
    return Session(params=params, root=root, run=RunFolder(params["run_dir"]),
                   data_root=data_root, cache_dir=cache_dir)


def _record(run: RunFolder, params: dict[str, Any]) -> None:
    """Keep ``params.yaml`` the record of what ran: rewrite it only when a notebook opened by hand
    ran with other values (under the runner they are the same and nothing is written)."""
    if run.read_params() != params:
        run.write_params(params)


@dataclass
class TrainedRun(Session):
    """A session over a run folder with a trained model (after notebook 02).

    ``model`` is in eval mode on ``device``; ``reported`` (:class:`~chexlib.reported.ReportedImages`,
    after notebook 03) and ``store`` (:class:`~chexlib.explain.store.MapStore` bound to this
    model's weights) open on first use. Create it with :func:`open_run`.
    """

    device: torch.device = field(default=torch.device("cpu"))
    model: nn.Module | None = None
    checkpoint: dict = field(default_factory=dict)

    @cached_property
    def reported(self) -> ReportedImages:
        return ReportedImages(self.run_dir, self.data_root, self.params["image_size"],
                              self.params["uncertainty_policy"], self.cache_dir)

    @cached_property
    def store(self) -> MapStore:
        return MapStore(self.run_dir, model=weights_fingerprint(self.model))


def open_run(source: dict[str, Any] | str | os.PathLike, model: nn.Module | None = None,
             device: str | torch.device | None = None) -> TrainedRun:
    """The trained model of a run on its device, with the run's reported images and map store.

    Parameters
    ----------
    source : dict or path
        A notebook's parameters (``collect(globals())``): set up as :func:`start` does. Or a run
        folder: its ``params.yaml`` is read, nothing is created, generated or seeded (the browser,
        benchmarks).
    model : nn.Module, optional
        Use this model instead of loading ``checkpoint.pt`` (then ``checkpoint`` is empty).
    device : str or torch.device, optional
        Default: the ``device`` parameter (``auto``: CUDA, then MPS, then the CPU).

    Raises
    ------
    MissingFileError, CheckpointError
        The run folder has no usable ``checkpoint.pt`` (run notebook 02), or no ``params.yaml``
        when ``source`` is a folder.
    """
    if isinstance(source, dict):
        session = start(source)
    else:
        session = _session_of_folder(RunFolder(Path(source).resolve()))
    device = torch.device(device) if device is not None else select_device(session.params["device"])
    checkpoint: dict = {}
    if model is None:
        model, checkpoint = model_from_checkpoint(session.run.checkpoint,
                                                  image_size=session.params["image_size"])
    fields = {name: getattr(session, name) for name in ("params", "root", "run", "data_root",
                                                        "cache_dir")}
    return TrainedRun(**fields, device=device, model=model.to(device).eval(),
                      checkpoint=checkpoint)


def _session_of_folder(run: RunFolder) -> Session:
    if not run.params.is_file():
        raise MissingFileError(f"{run.params} does not exist: {run.path} is not a run folder "
                               "(python -m chexlib run writes it)")
    params = validate(run.read_params(), source=str(run.params))
    return _session(params | {"run_dir": str(run.path)}, project_root())


__all__ = ["Session", "TrainedRun", "open_run", "run_parameters", "start"]
