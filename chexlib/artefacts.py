"""The run folder's result files: their formats, writing and reading (names: chexlib.run).

Notebook 03 writes them, notebooks 04-06 read them::

    predictions.csv   one row per reported image: Path, then per observation "<name> label" and
                      "<name> prob" (the label as in valid.csv, the predicted probability, written
                      exactly: it reads back bit for bit, see :func:`write_predictions`)
    thresholds.json   per observation: threshold, how it was chosen, and on which split
    outcomes.csv      one row per reported image: Path, then per observation TP / FP / FN / TN
    metrics.json      per-class AUROC, AUPRC with bootstrap intervals, and the summary means

Every file is written atomically; every reader checks the columns and says which notebook to
run when a file is missing.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexlib.errors import LabelFileError, MissingFileError
from chexlib.files import atomic_write_json, atomic_write_text
from chexlib.observations import OBSERVATIONS

OUTCOME_VALUES = ("TP", "FP", "FN", "TN")


def _require(path: Path, made_by: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist: run {made_by} for this run folder first")
    return path


def write_predictions(path: str | os.PathLike, image_paths: list[str], labels: np.ndarray,
                      probs: np.ndarray, classes: tuple[str, ...] = OBSERVATIONS) -> Path:
    """Write ``predictions.csv``: labels [N, C] and probabilities [N, C] of the reported images.

    Each probability is written as the shortest decimal that reads back as exactly its float64
    value (float32 and float16 values are float64 values too), so :func:`read_predictions`
    returns the probabilities bit for bit and any metric recomputed from the file (AUROC, AUPRC,
    outcomes at a threshold) equals the one computed in memory: no rounding merges or reorders
    two scores. Labels (0 / 1) are written as before.
    """
    labels, probs = np.asarray(labels), np.asarray(probs)
    if labels.shape != probs.shape or labels.shape != (len(image_paths), len(classes)):
        raise ValueError(f"predictions: expected labels and probs of shape "
                         f"[{len(image_paths)}, {len(classes)}], got {labels.shape} and {probs.shape}")
    columns: dict[str, Any] = {"Path": list(image_paths)}
    for j, name in enumerate(classes):
        columns[f"{name} label"] = labels[:, j]
        columns[f"{name} prob"] = _exact_decimals(probs[:, j])
    return atomic_write_text(path, pd.DataFrame(columns).to_csv(index=False, float_format="%.6g"))


def read_predictions(path: str | os.PathLike, classes: tuple[str, ...] = OBSERVATIONS
                     ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Read ``predictions.csv``: image paths, labels [N, C] and probabilities [N, C] (float64).

    The probabilities are the written ones bit for bit (``probs.astype(written_dtype)`` gives back
    a float32 array exactly): each is parsed by Python's correctly rounded ``float``, not by the
    CSV parser's fast converter, which may miss the last bit of a 17-digit decimal.
    """
    path = _require(Path(path), "notebook 03 (evaluation)")
    prob_columns = [f"{c} prob" for c in classes]
    df = pd.read_csv(path, dtype={c: str for c in prob_columns})
    needed = ["Path"] + [f"{c} {k}" for c in classes for k in ("label", "prob")]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise LabelFileError(f"{path}: missing column(s) {missing[:3]}; rerun notebook 03")
    labels = df[[f"{c} label" for c in classes]].to_numpy(np.float64)
    probs = np.empty((len(df), len(classes)), dtype=np.float64)
    for j, column in enumerate(prob_columns):
        for i, text in enumerate(df[column].tolist()):
            try:
                probs[i, j] = float(text) if isinstance(text, str) else np.nan
            except ValueError:
                raise LabelFileError(f"{path}, line {i + 2}, column {column!r}: {text!r} is not a "
                                     f"number; rerun notebook 03") from None
    return df["Path"].astype(str).tolist(), labels, probs


def _exact_decimals(values: np.ndarray) -> list[str]:
    """Each value as the shortest decimal that reads back as exactly its float64 value ('' for
    NaN, as pandas writes a missing value)."""
    return ["" if math.isnan(v) else repr(v) for v in np.asarray(values, dtype=np.float64).tolist()]


def write_thresholds(path: str | os.PathLike, table: pd.DataFrame, split: str) -> Path:
    """Write ``thresholds.json`` from a threshold table (index: observation)."""
    doc = {"chosen_on": split,
           "classes": {str(name): {k: _plain(v) for k, v in row.items()}
                       for name, row in table.iterrows()}}
    return atomic_write_json(path, doc, indent=1)


def read_thresholds(path: str | os.PathLike, classes: tuple[str, ...] = OBSERVATIONS) -> np.ndarray:
    """Per-class thresholds [C] from ``thresholds.json``, in ``classes`` order."""
    path = _require(Path(path), "notebook 03 (evaluation)")
    doc = json.loads(path.read_text(encoding="utf-8"))
    try:
        return np.array([float(doc["classes"][c]["threshold"]) for c in classes])
    except (KeyError, TypeError, ValueError) as err:
        raise LabelFileError(f"{path}: no threshold for {err}; rerun notebook 03") from err


def write_outcomes(path: str | os.PathLike, image_paths: list[str], outcomes: np.ndarray,
                   classes: tuple[str, ...] = OBSERVATIONS) -> Path:
    """Write ``outcomes.csv``: TP / FP / FN / TN [N, C] per reported image and observation."""
    df = pd.DataFrame(np.asarray(outcomes), columns=list(classes))
    df.insert(0, "Path", list(image_paths))
    return atomic_write_text(path, df.to_csv(index=False))


def read_outcomes(path: str | os.PathLike, classes: tuple[str, ...] = OBSERVATIONS) -> pd.DataFrame:
    """``outcomes.csv`` as a DataFrame (Path + one column per observation), validated."""
    path = _require(Path(path), "notebook 03 (evaluation)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ["Path", *classes] if c not in df.columns]
    if missing:
        raise LabelFileError(f"{path}: missing column(s) {missing[:3]}; rerun notebook 03")
    bad = ~df[list(classes)].isin(OUTCOME_VALUES)
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise LabelFileError(f"{path}, line {row + 2}, column {classes[col]!r}: "
                             f"{df.iloc[row][classes[col]]!r} is not one of {', '.join(OUTCOME_VALUES)}")
    return df


def write_metrics(path: str | os.PathLike, table: pd.DataFrame, summary: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``metrics.json``: the per-class table and the summary (NaN written as null)."""
    doc = {"per_class": {str(name): {k: _plain(v) for k, v in row.items()}
                         for name, row in table.iterrows()},
           "summary": {k: _plain(v) for k, v in summary.items()},
           **({k: _plain(v) for k, v in (extra or {}).items()})}
    return atomic_write_json(path, doc, indent=1)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """``metrics.json`` as a dict."""
    path = _require(Path(path), "notebook 03 (evaluation)")
    return json.loads(path.read_text(encoding="utf-8"))


def class_aurocs(path: str | os.PathLike) -> dict[str, float]:
    """Observation -> AUROC from ``metrics.json`` (NaN where the class was undefined)."""
    doc = read_metrics(path)
    try:
        return {name: float("nan") if row["auroc"] is None else float(row["auroc"])
                for name, row in doc["per_class"].items()}
    except (KeyError, TypeError, ValueError) as error:
        raise LabelFileError(f"{path}: expected per_class -> observation -> auroc (a number or "
                             f"null), as notebook 03 writes it; rerun notebook 03 ({error!r})"
                             ) from None


def _plain(value: Any) -> Any:
    """JSON-safe Python value: numpy scalars unwrapped, NaN -> None, lists kept."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
