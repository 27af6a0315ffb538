"""The per-class evaluation table of notebook 03 and its summary means.

Following the CheXpert evaluation conventions: a class with a single label value is kept in the
table, flagged ``defined=False`` with a note, and left out of every mean (never dropped silently);
a class with very few positives gets a note, because its AUROC (e.g. the original study's 1.00 for
Pleural Other) rests on a handful of images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from chexlib.errors import MetricInputError
from chexlib.metrics._inputs import check_labels_probs, class_names
from chexlib.metrics.bootstrap import bootstrap_ci
from chexlib.metrics.discrimination import auroc_auprc
from chexlib.observations import COMPETITION_OBSERVATIONS

#: Below this many positives (or negatives) a defined class gets a "few ..." note.
FEW_LABELS = 5

TABLE_COLUMNS: tuple[str, ...] = (
    "auroc", "auroc_low", "auroc_high", "auprc", "auprc_low", "auprc_high",
    "positives", "support", "prevalence", "defined", "note", "n_valid",
)


def per_class_table(y_true, y_prob, classes: Sequence[str] | None = None, groups=None,
                    n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """AUROC and AUPRC with bootstrap intervals, label counts and flags, one row per class.

    Parameters
    ----------
    y_true : array-like, shape [N, C]
        Binary labels, 0 or 1.
    y_prob : array-like, shape [N, C]
        Predicted probabilities in [0, 1].
    classes : list of C str, optional
        Row names; default the 14 CheXpert observations when C == 14.
    groups : array-like, shape [N], optional
        Patient ids: the bootstrap then resamples patients (see :func:`bootstrap_ci`).
    n_boot : int
        Bootstrap resamples; 0 skips the intervals (NaN).
    seed : int
        Seed of the bootstrap.
    level : float
        Interval coverage, default 0.95.

    Returns
    -------
    DataFrame indexed by class, columns
        ``auroc``, ``auroc_low``, ``auroc_high``, ``auprc``, ``auprc_low``, ``auprc_high``
        (NaN where undefined), ``positives`` (int), ``support`` (N), ``prevalence``,
        ``defined`` (both labels present), ``note`` ("" or e.g. "undefined: no positives",
        "few positives (<5)") and ``n_valid`` (resamples with both labels).
    """
    y_true, y_prob = check_labels_probs(y_true, y_prob)
    names = class_names(classes, y_true.shape[1])
    if n_boot == 0:
        n_classes = len(names)
        ci = {key: np.full(n_classes, np.nan) for key in
              ("auroc_low", "auroc_high", "auprc_low", "auprc_high")}
        ci["n_valid"] = np.zeros(n_classes, dtype=int)
    else:
        ci = bootstrap_ci(y_true, y_prob, groups=groups, n_boot=n_boot, level=level, seed=seed)
    aurocs, auprcs = auroc_auprc(y_true, y_prob)
    positives = y_true.sum(axis=0).astype(int)
    support = y_true.shape[0]
    table = pd.DataFrame({
        "auroc": aurocs, "auroc_low": ci["auroc_low"], "auroc_high": ci["auroc_high"],
        "auprc": auprcs, "auprc_low": ci["auprc_low"], "auprc_high": ci["auprc_high"],
        "positives": positives, "support": support, "prevalence": positives / support,
        "defined": (positives > 0) & (positives < support),
    }, index=pd.Index(names, name="class"))
    table["note"] = [_note(p, support - p, v, n_boot) for p, v in zip(positives, ci["n_valid"])]
    table["n_valid"] = np.asarray(ci["n_valid"], dtype=int)
    return table


def _note(n_pos: int, n_neg: int, n_valid: int, n_boot: int) -> str:
    """Why a class's numbers need care, or "" when they need none."""
    if n_pos == 0:
        return "undefined: no positives"
    if n_neg == 0:
        return "undefined: no negatives"
    notes = []
    if n_pos < FEW_LABELS:
        notes.append(f"few positives (<{FEW_LABELS})")
    if n_neg < FEW_LABELS:
        notes.append(f"few negatives (<{FEW_LABELS})")
    if 0 < n_boot and n_valid < n_boot:
        notes.append(f"CI from {n_valid} of {n_boot} resamples (the rest lacked a label)")
    return "; ".join(notes)


def summary(table: pd.DataFrame) -> dict:
    """Mean AUROC / AUPRC over the defined classes of a :func:`per_class_table`.

    Parameters
    ----------
    table : DataFrame
        From :func:`per_class_table` (needs ``auroc``, ``auprc``, ``positives``, ``defined``).

    Returns
    -------
    dict
        ``macro_auroc``, ``macro_auprc``: unweighted means over defined classes (sklearn's
        ``average="macro"`` on those columns). ``weighted_auroc``, ``weighted_auprc``: means
        weighted by the number of positives (the original study's "support-weighted"; sklearn's
        ``average="weighted"``). ``competition_auroc``: mean over the defined classes among the
        5 CheXpert competition observations, listed in ``competition_classes``. ``undefined``:
        names of the classes left out; ``n_defined``: how many were used. Means are NaN when no
        class qualifies.
    """
    missing = [c for c in ("auroc", "auprc", "positives", "defined") if c not in table.columns]
    if missing:
        raise MetricInputError(f"table must be a per_class_table with columns auroc, auprc, "
                               f"positives, defined: missing {missing}")
    defined = table[table["defined"].astype(bool)]
    competition = defined[defined.index.isin(COMPETITION_OBSERVATIONS)]
    return {
        "macro_auroc": _mean(defined["auroc"]),
        "macro_auprc": _mean(defined["auprc"]),
        "weighted_auroc": _mean(defined["auroc"], defined["positives"]),
        "weighted_auprc": _mean(defined["auprc"], defined["positives"]),
        "competition_auroc": _mean(competition["auroc"]),
        "competition_classes": list(competition.index),
        "undefined": [str(name) for name in table.index[~table["defined"].astype(bool)]],
        "n_defined": len(defined),
    }


def _mean(values: pd.Series, weights: pd.Series | None = None) -> float:
    """(Weighted) mean as a plain float; NaN for no values instead of a warning."""
    if len(values) == 0:
        return float("nan")
    return float(np.average(values.to_numpy(float),
                            weights=None if weights is None else weights.to_numpy(float)))
