"""The parameter schema of the notebook series: every name, its default and what it allows.

Each notebook's ``parameters`` cell declares the names that notebook reads, with the defaults
below (the ``default`` preset); ``python -m chexlib params`` lists which notebook reads which.
The runner resolves a parameter set (schema defaults <- preset <- YAML file <- ``-p`` overrides)
and validates it here before any notebook starts: an unknown name, a wrong type or an
out-of-range value stops the run with a message naming the parameter and what is allowed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chexlib.errors import MissingFileError, ParameterError
from chexlib.methods import (CAM_LAYERS, DEFAULT_COMPOSITE, FOLDED_COMPOSITES, names,
                             pass_variant)
from chexlib.observations import OBSERVATIONS, UNCERTAINTY_POLICIES


@dataclass(frozen=True)
class Param:
    """One parameter: its type, default, constraint and a one-line description.

    ``choices`` and ``item_choices`` are tuples, or live lists of the method registry
    (:func:`chexlib.methods.names`: a method registered later is allowed too).
    """

    type: type
    default: Any
    help: str
    choices: Sequence | None = None
    low: float | None = None
    high: float | None = None
    item_choices: Sequence | None = None  # allowed items of a list parameter
    may_be_empty: bool = False  # a list parameter whose empty value means "none extra"
    check: Callable[[Any], str | None] | None = None


SCHEMA: dict[str, Param] = {
    "dataset": Param(str, "phantom", "data set: the built-in phantom or the real CheXpert",
                     choices=("phantom", "chexpert")),
    "data_root": Param(str, "data/phantom",
                       "folder holding train.csv and valid.csv (relative to the repository)"),
    "phantom_n_train": Param(int, 2000, "phantom: images in train.csv", low=10, high=1_000_000),
    "phantom_n_valid": Param(int, 234, "phantom: images in valid.csv (CheXpert's has 234)",
                             low=10, high=100_000),
    "phantom_seed": Param(int, 0, "phantom: generator seed", low=0, high=2**32 - 1),
    "phantom_marker_rate_ap": Param(float, 0.9, "phantom: share of AP films with the burned-in "
                                    "PORTABLE marker (the planted shortcut)", low=0.0, high=1.0),
    "phantom_marker_rate_pa": Param(float, 0.03, "phantom: share of PA films with the marker",
                                    low=0.0, high=1.0),
    "phantom_drain_rate": Param(float, 0.0, "phantom: share of pneumothorax images in train.csv "
                                "with a chest drain (the planted confounder)", low=0.0, high=1.0),
    "phantom_drain_rate_valid": Param(float, 0.0, "phantom: share of pneumothorax images in "
                                      "valid.csv with a chest drain", low=0.0, high=1.0),
    "phantom_drain_rate_other": Param(float, 0.0, "phantom: share of the other images (both "
                                      "splits) with a chest drain", low=0.0, high=1.0),
    "image_size": Param(int, 128, "square input size in pixels", low=32, high=1024),
    "uncertainty_policy": Param(str, "zeros", "uncertain labels: zeros (U-Zeros), ones, ignore",
                                choices=tuple(UNCERTAINTY_POLICIES)),
    "val_fraction": Param(float, 0.1, "share of train.csv patients held out for validation",
                          low=0.01, high=0.5),
    "epochs": Param(int, 4, "training epochs", low=1, high=1000),
    "batch_size": Param(int, 16, "mini-batch size (the study used 16); training needs at least 2 "
                        "images per process for BatchNorm", low=2, high=4096),
    "lr": Param(float, 1e-4, "Adam learning rate", low=1e-8, high=1.0),
    "seed": Param(int, 0, "seed for splits, initialisation and sampling", low=0, high=2**32 - 1),
    "device": Param(str, "auto", "auto (CUDA, then MPS, then CPU), cpu, cuda or mps",
                    choices=("auto", "cpu", "cuda", "mps")),
    "num_workers": Param(int, 0, "DataLoader worker processes", low=0, high=64),
    "precision": Param(str, "auto", "training/prediction precision: auto (bf16 on CUDA where "
                       "supported, fp16 on older GPUs, bf16 on CPUs with native bf16, float32 "
                       "elsewhere), fp32, bf16 or fp16 (CUDA only); explanations stay float32",
                       choices=("auto", "fp32", "bf16", "fp16")),
    "train_launcher": Param(str, "in_process", "notebook 02 trains in its own process "
                            "(in_process) or launches python -m chexlib.train under torchrun",
                            choices=("in_process", "torchrun")),
    "train_processes": Param(int, 1, "torchrun: processes on this machine (one per GPU)",
                             low=1, high=1024),
    "cache_dir": Param(str, "", "image cache folder; empty: <data_root>/.cache"),
    "weights": Param(str, "auto", "initial weights: auto (ImageNet if available, else from "
                     "scratch), imagenet, none, or a checkpoint / state-dict file",
                     check=lambda v: None if v in ("auto", "imagenet", "none") or v.endswith(
                         (".pt", ".pth")) else "expected auto, imagenet, none or a .pt/.pth file"),
    "retrain": Param(bool, False, "train again even if the run folder holds a finished run"),
    "pos_weight": Param(bool, False, "weight positives by negatives/positives in the loss"),
    "lr_schedule": Param(str, "none", "learning-rate schedule: none, plateau (x0.1 when the "
                         "validation AUROC stalls) or cosine (5 % linear warm-up to lr, then a "
                         "half-cosine to 0 over the run's steps)",
                         choices=("none", "plateau", "cosine")),
    "early_stopping": Param(int, 0, "stop after this many epochs without improvement (0: off)",
                            low=0, high=1000),
    "checkpoint_every": Param(int, 0, "also save the resume point every N steps (0: per epoch)",
                              low=0, high=10_000_000),
    "threshold_method": Param(str, "youden", "per-class operating threshold, chosen on the "
                              "internal validation split", choices=("youden", "f1")),
    "n_bootstrap": Param(int, 1000, "bootstrap resamples (by patient) for confidence intervals",
                         low=0, high=100_000),
    "run_dir": Param(str, "runs/default", "run folder: the hand-off between notebooks"),
    "classes_to_show": Param(list, ["Cardiomegaly", "Pleural Effusion", "Pneumothorax",
                                    "Support Devices"],
                             "observations shown in the figures", item_choices=OBSERVATIONS),
    "n_examples": Param(int, 8, "example images per gallery", low=1, high=64),
    "lrp_composite": Param(str, DEFAULT_COMPOSITE, "LRP composite of the galleries, the stored "
                           "maps and the browser", choices=names("lrp")),
    "composites": Param(list, [*FOLDED_COMPOSITES, pass_variant(DEFAULT_COMPOSITE)],
                        "LRP composites compared side by side (-pass: BatchNorms not folded)",
                        item_choices=names("lrp")),
    "gradcam_layer": Param(str, "relu", "Grad-CAM layer: the head's ReLU (rectified final feature "
                           "maps) or a convolutional stage", choices=CAM_LAYERS),
    "heatmap_scale": Param(str, "per_map", "heatmap colour scale: per_map, or shared by the "
                           "classes of an image", choices=("per_map", "shared")),
    "n_evaluate": Param(int, 2, "comparison: (image, class) pairs per observation and outcome "
                        "(TP, FP, FN)", low=1, high=1000),
    "observation_composites": Param(list, [], "comparison: LRP composites scored on every "
                                    "masked pair beside lrp_composite (the per-observation "
                                    "table); each adds about 2 min on a 2-core CPU",
                                    item_choices=names("lrp"), may_be_empty=True),
    "n_faithfulness": Param(int, 24, "comparison: pairs in the region-perturbation test",
                            low=1, high=100_000),
    "perturbation_fill": Param(str, "blur", "what replaces removed regions: blur, noisy_linear, "
                               "mean or zero", choices=("blur", "noisy_linear", "mean", "zero")),
    "control_run": Param(str, "", "shortcut lab: run folder of a control run (phantom_drain_rate "
                         "0) whose causal table notebook 07 compares with; empty: none"),
    "n_explain": Param(int, 32, "reported images whose maps are stored for browsing",
                       low=1, high=1_000_000),
}


def names() -> list[str]:
    """Names of all parameters, in schema order."""
    return list(SCHEMA)


def defaults() -> dict[str, Any]:
    """The default value of every parameter (the ``default`` preset)."""
    return {k: (list(p.default) if isinstance(p.default, list) else p.default)
            for k, p in SCHEMA.items()}


def describe(readers: dict[str, list[str]] | None = None) -> str:
    """A table of every parameter: name, type, default, allowed values and description.

    Parameters
    ----------
    readers : dict, optional
        Per name, the notebooks whose ``parameters`` cell declares it
        (:func:`chexlib.runner.parameter_readers`); shown as a column when given.
    """
    rows = []
    for name, p in SCHEMA.items():
        allowed = _allowed_text(p)
        read_by = ""
        if readers is not None:
            read_by = f"{','.join(readers.get(name, [])) or '-':<17} "
        rows.append(f"{name:<20} {p.type.__name__:<5} {read_by}{p.default!r:<28} {allowed:<28} "
                    f"{p.help}")
    if readers is not None:
        rows.insert(0, f"{'name':<20} {'type':<5} {'notebooks':<17} {'default':<28} "
                       f"{'allowed':<28} description")
    return "\n".join(rows)


def _allowed_text(p: Param) -> str:
    if p.choices:
        return "one of " + ", ".join(map(str, p.choices))
    if p.item_choices:
        return "a list of " + ("observation names" if p.item_choices == OBSERVATIONS
                               else "items from " + ", ".join(p.item_choices))
    if p.low is not None:
        return _range_text(p)
    return ""


def _range_text(p: Param) -> str:
    if p.type is int:
        return f"{int(p.low)} .. {int(p.high)}"
    return f"{p.low:g} .. {p.high:g}"


def validate(params: dict[str, Any], source: str = "parameters") -> dict[str, Any]:
    """Check a parameter set and return it complete and with canonical types.

    Parameters
    ----------
    params : dict
        Any subset of :data:`SCHEMA`; missing names take their defaults.
    source : str
        Where the values came from, used in error messages (a file name, "-p", a preset).

    Raises
    ------
    ParameterError
        For an unknown name (with the closest valid name and the full list), a value of the
        wrong type, a value outside its range or allowed set.
    """
    unknown = [k for k in params if k not in SCHEMA]
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, list(SCHEMA), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(
            f"{source}: unknown parameter {name!r}{hint}; valid parameters: {', '.join(SCHEMA)}"
        )
    out = defaults()
    for name, value in params.items():
        out[name] = _coerce(name, SCHEMA[name], value, source)
    if {"batch_size", "train_launcher", "train_processes"} <= params.keys():
        _check_batch_per_process(out, source)
    return out


def _check_batch_per_process(values: dict[str, Any], source: str) -> None:
    """Under torchrun each of ``train_processes`` processes trains on its share of a batch."""
    processes = values["train_processes"] if values["train_launcher"] == "torchrun" else 1
    if values["batch_size"] < 2 * processes:
        raise ParameterError(
            f"{source}: parameter 'batch_size' = {values['batch_size']!r} is too small for "
            f"train_processes={processes}: each process needs at least 2 images per step "
            f"(BatchNorm); expected batch_size >= {2 * processes}"
        )


def _did_you_mean(value: Any, allowed: tuple) -> str:
    """`` (did you mean 'x'?)`` for a misspelled string, else empty."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(name: str, p: Param, value: Any, source: str) -> Any:
    where = f"{source}: parameter {name!r}"
    if p.type is bool:
        if not isinstance(value, bool):
            raise ParameterError(f"{where} = {value!r} is not true/false")
        return value
    if p.type is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ParameterError(f"{where} = {value!r} is not a whole number; expected an integer"
                                 f" in {_range_text(p)}")
        value = int(value)
    elif p.type is float:
        if isinstance(value, str):
            # YAML 1.1 (PyYAML) reads `lr: 1e-4` as the string "1e-4".
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ParameterError(f"{where} = {value!r} is not a number; expected a number in "
                                 f"{_range_text(p)}")
        value = float(value)
    elif p.type is str:
        if not isinstance(value, str):
            raise ParameterError(f"{where} = {value!r} is not a string")
    elif p.type is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ParameterError(f"{where} = {value!r} is not a list")
        value = list(value)
        bad = [v for v in value if p.item_choices and v not in p.item_choices]
        if bad:
            raise ParameterError(f"{where}: {bad[0]!r} is not allowed"
                                 f"{_did_you_mean(bad[0], p.item_choices)}; expected items from "
                                 f"{', '.join(map(str, p.item_choices))}")
        if not value and not p.may_be_empty:
            raise ParameterError(f"{where} is empty; expected at least one item")
    if p.choices and value not in p.choices:
        raise ParameterError(f"{where} = {value!r} is not allowed"
                             f"{_did_you_mean(value, p.choices)}; expected one of "
                             f"{', '.join(map(str, p.choices))}")
    if p.low is not None and not (p.low <= value <= p.high):
        raise ParameterError(f"{where} = {value!r} is out of range; expected {_range_text(p)}")
    if p.check is not None:
        problem = p.check(value)
        if problem:
            raise ParameterError(f"{where} = {value!r}: {problem}")
    return value


def preset_names() -> list[str]:
    """Names of the presets shipped with chexlib (``default``, ``smoke``, ``chexpert``)."""
    folder = importlib.resources.files("chexlib") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The overrides a preset makes to the defaults (validated)."""
    if name not in preset_names():
        raise ParameterError(f"unknown preset {name!r}; expected one of {', '.join(preset_names())}")
    text = (importlib.resources.files("chexlib") / "presets" / f"{name}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    validate(values, source=f"preset {name!r}")
    return values


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parameters from a YAML file (a mapping of names to values), validated."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"parameter file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParameterError(f"{path}: not valid YAML ({err}); {_MAPPING}") from err
    if not isinstance(values, dict):
        raise ParameterError(f"{path}: {_MAPPING}; got {_kind(values)}")
    validate(values, source=str(path))
    return values


_MAPPING = "expected a mapping of parameter names to values (name: value lines)"


def _kind(value: Any) -> str:
    """What a YAML document turned out to be: ``a list``, ``a str ('epochs=3')``."""
    if isinstance(value, (list, tuple)):
        return "a list"
    text, name = repr(value), type(value).__name__
    article = "an" if name[0] in "aeiou" else "a"
    return f"{article} {name} ({text[:60] + '...' if len(text) > 60 else text})"


def parse_override(text: str) -> Any:
    """Parse a ``-p KEY VALUE`` value the way YAML would (``3`` -> 3, ``[a, b]`` -> list)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # PyYAML (YAML 1.1) reads "1e-3" as a string; a number is what anyone typing it means.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def resolve(preset: str = "default", files: tuple = (), overrides: dict | None = None) -> dict:
    """Resolve the full parameter set: defaults <- preset <- files (in order) <- overrides."""
    params = defaults()
    params.update(load_preset(preset))
    for f in files:
        params.update(load_file(f))
    if overrides:
        params.update(validate_partial(overrides, source="-p"))
    return validate(params, source="resolved parameters")


def validate_partial(values: dict, source: str) -> dict:
    """Validate only the given names; return them with canonical types."""
    full = validate(values, source=source)
    return {k: full[k] for k in values}


def collect(namespace: dict[str, Any]) -> dict[str, Any]:
    """Pick the schema's names out of a notebook's namespace (``globals()``) and validate them.

    A notebook's ``parameters`` cell declares only the names that notebook reads (papermill
    injects the run's values for them after it); :func:`chexlib.session.start` takes the others
    from the run folder's ``params.yaml``. No other cell of a notebook assigns a schema name
    (a test checks), so the names found here are the declared ones.
    """
    return validate_partial({k: namespace[k] for k in SCHEMA if k in namespace},
                            source="notebook parameters")
