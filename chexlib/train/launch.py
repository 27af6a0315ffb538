"""A run's training from its parameters: the data, the model, and where the training runs.

The data: :func:`training_data` (training and internal validation, from ``train.csv``) and
:func:`reported_data` (``valid.csv``, which notebook 03 reports on), prepared alike.

Two launchers, one result (``checkpoint.pt``, ``checkpoint_last.pt``, ``history.csv`` in the run
folder, which notebooks 03-06 read unchanged):

``in_process``  :func:`chexlib.train.loop.fit` inside the notebook's kernel (one CPU or GPU).
``torchrun``    ``python -m torch.distributed.run --standalone --nproc_per_node N -m chexlib.train
                --params <run>/train_params.yaml`` as a child process (one process per GPU, or
                several CPU processes with gloo); its output is relayed line by line.

Rank 0 of a torchrun job also writes ``train.log`` (what it printed) and ``train_result.json``
(status, seconds, images/s) into the run folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from chexlib.errors import ChexlibError, ParameterError
from chexlib.files import atomic_write_bytes, atomic_write_json
from chexlib.fingerprint import data_fingerprint
from chexlib.run import RunFolder
from chexlib.train.config import TrainConfig, TrainResult
from chexlib.train.distributed import DistContext
from chexlib.train.loop import fit

PARAMS_FILE = "train_params.yaml"


class TrainingFailed(ChexlibError, RuntimeError):
    """The torchrun child process failed; the message carries the end of its output."""


def training_data(params: dict[str, Any], data_root: Path, cache_dir: Path,
                  progress: bool = True):
    """The training and internal-validation datasets of a run (split by patient).

    Parameters
    ----------
    params : dict
        Validated parameters (``image_size``, ``uncertainty_policy``, ``val_fraction``, ``seed``,
        ``num_workers``).
    data_root, cache_dir : Path

    Returns
    -------
    train_ds, val_ds : CheXpertDataset
        Both over ``train.csv`` (the reported split, ``valid.csv``, is never used for training).
    """
    from chexlib.data import CheXpertDataset, patient_split, read_labels

    labels = read_labels(data_root / "train.csv")
    train_rows, val_rows = patient_split(labels, val_fraction=params["val_fraction"],
                                         seed=params["seed"])
    common = _dataset_options(params, cache_dir, progress)
    return (CheXpertDataset(data_root, labels, indices=train_rows, **common),
            CheXpertDataset(data_root, labels, indices=val_rows, **common))


def reported_data(params: dict[str, Any], data_root: Path, cache_dir: Path,
                  progress: bool = True):
    """The reported split of a run (``valid.csv``), prepared as :func:`training_data`'s.

    Parameters
    ----------
    params : dict
        Validated parameters (``image_size``, ``uncertainty_policy``, ``num_workers``).
    data_root, cache_dir : Path

    Returns
    -------
    CheXpertDataset
        Every row of ``valid.csv``, in file order.
    """
    from chexlib.data import CheXpertDataset

    return CheXpertDataset(data_root, "valid", **_dataset_options(params, cache_dir, progress))


def _dataset_options(params: dict[str, Any], cache_dir: Path, progress: bool) -> dict[str, Any]:
    return {"image_size": params["image_size"], "policy": params["uncertainty_policy"],
            "cache_dir": cache_dir, "cache_workers": params["num_workers"], "progress": progress}


def build_model(params: dict[str, Any]):
    """A DenseNet-121 with the run's classes and starting weights (``weights``)."""
    from chexlib.model import densenet121

    return densenet121(num_classes=len(TrainConfig.from_params(params).classes),
                       weights=params["weights"])


def train_in_process(params: dict[str, Any], model, train_ds, val_ds, run_dir: Path, *,
                     device=None, context: DistContext | None = None,
                     log: Callable = print) -> TrainResult:
    """:func:`fit` with the run's parameters (the notebook's and each torchrun rank's call).

    ``device`` defaults to the ``device`` parameter; a torchrun rank passes its own GPU.
    """
    config = replace(TrainConfig.from_params(params), data=data_fingerprint(train_ds, val_ds))
    return fit(model, train_ds, val_ds, config, run_dir,
               device=device or params["device"], num_workers=params["num_workers"],
               checkpoint_every=params["checkpoint_every"], retrain=params["retrain"],
               precision=params["precision"], context=context, log=log)


def torchrun_command(params_file: Path, processes: int) -> list[str]:
    """The torchrun command line that trains the parameters in ``params_file``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "chexlib.train", "--params", str(params_file)]


def train_with_torchrun(params: dict[str, Any], run_dir: Path, processes: int | None = None,
                        log: Callable = print) -> TrainResult:
    """Train in ``processes`` torchrun worker processes; wait, relay the output, read the result.

    Parameters
    ----------
    params : dict
        Validated parameters with absolute paths (the session's).
    run_dir : Path
    processes : int, optional
        Default: the ``train_processes`` parameter.

    Raises
    ------
    TrainingFailed
        The job exited with an error; the message quotes the end of its output.
    """
    processes = processes or params["train_processes"]
    params_file = run_dir / PARAMS_FILE
    atomic_write_bytes(params_file, yaml.safe_dump(params, sort_keys=False).encode())
    command = torchrun_command(params_file, processes)
    log(" ".join(command[1:]))
    tail: list[str] = []
    errors: list[str] = []  # chexlib's own "error: ..." lines say what to fix
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as child:
        for line in child.stdout:
            line = line.rstrip("\n")
            log(line)
            tail = (tail + [line])[-20:]
            if line.startswith("error: ") and line not in errors:
                errors.append(line)
    if child.returncode != 0:
        raise TrainingFailed(
            f"torchrun training exited with status {child.returncode}:\n"
            + "\n".join(errors or tail) + f"\n(full output above; command: {' '.join(command)})")
    return read_result(run_dir)


def write_result(run_dir: Path, result: TrainResult) -> Path:
    """Record what a torchrun job did, for :func:`read_result` (rank 0 only)."""
    return atomic_write_json(RunFolder(run_dir).train_result, {
        "status": result.status, "seconds": result.seconds,
        "images_per_second": result.images_per_second, "notes": result.notes,
    }, indent=1)


def read_result(run_dir: Path) -> TrainResult:
    """The :class:`TrainResult` of a finished torchrun job in ``run_dir``."""
    run = RunFolder(run_dir)
    path = run.train_result
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainingFailed(f"{path} is missing or unreadable ({err}); the job did not finish") from err
    history = pd.read_csv(run.history) if run.history.is_file() else pd.DataFrame()
    return TrainResult(run.checkpoint, run.last_checkpoint, history, info["status"],
                       info["seconds"], info["images_per_second"], info["notes"])


def run_training(params: dict[str, Any], model, train_ds, val_ds, run_dir: Path,
                 log: Callable = print) -> TrainResult:
    """Train as the ``train_launcher`` parameter says (notebook 02's training cell)."""
    launcher = params["train_launcher"]
    if launcher == "in_process":
        return train_in_process(params, model, train_ds, val_ds, run_dir, log=log)
    if launcher == "torchrun":
        return train_with_torchrun(params, run_dir, log=log)
    raise ParameterError(f"train_launcher {launcher!r} is unknown; expected in_process or torchrun")
