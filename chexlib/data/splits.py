"""Patient-level split of a label file into training and internal validation.

CheXpert's ``valid.csv`` is small (234 images) and reserved for reporting, so model selection and
threshold choice need a validation split carved out of ``train.csv``. Images of one patient are
strongly correlated, so the split is by patient: no patient is on both sides.

The patients chosen depend only on the set of patient ids and the seed, never on the row order:
the ids are sorted, shuffled with ``numpy.random.default_rng(seed)``, and the first
``round(val_fraction * n_patients)`` go to validation.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from chexlib.data.labels import patient_ids
from chexlib.errors import LabelFileError, ParameterError


def patient_split(
    df: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into training and internal validation, keeping each patient on one side.

    Parameters
    ----------
    df : DataFrame
        Labels with a CheXpert ``Path`` column (as from :func:`chexlib.data.read_labels`).
    val_fraction : float
        Fraction of *patients* (not images) that go to validation, in (0, 1). The image
        fraction is close to it when patients have similar numbers of images.
    seed : int
        Seed of the shuffle; the same seed gives the same patients.

    Returns
    -------
    train_rows, val_rows : ndarray int64, shapes [N_train], [N_val]
        Sorted *positional* row indices into ``df`` (use ``df.iloc``); together they cover
        every row once.

    Raises
    ------
    ParameterError
        If ``df`` has no rows (e.g. a filter left none), or ``val_fraction`` is not in (0, 1)
        or would leave either side without patients.
    LabelFileError
        If ``df`` has no ``Path`` column or a ``Path`` has no patient id.
    """
    if (
        not isinstance(val_fraction, numbers.Real)
        or isinstance(val_fraction, bool)
        or not 0.0 < float(val_fraction) < 1.0
    ):
        raise ParameterError(f"val_fraction is {val_fraction!r}; expected a number in (0, 1)")
    if isinstance(df, pd.DataFrame) and len(df) == 0:
        raise ParameterError(
            "patient_split: df has no rows (did a filter leave none?); expected a label frame "
            "with at least two patients, one for each side"
        )
    pids = _patients(df)
    patients = np.unique(pids)  # sorted, so the row order cannot matter
    n_val = round(float(val_fraction) * len(patients))
    if n_val == 0 or n_val == len(patients):
        side = "validation" if n_val == 0 else "training"
        raise ParameterError(
            f"val_fraction={val_fraction} of {len(patients)} patients leaves the {side} side "
            f"empty (round({val_fraction} * {len(patients)}) = {n_val}); expected at least one "
            "patient on each side: use more patients or another val_fraction"
        )
    shuffled = np.random.default_rng(seed).permutation(patients)
    is_val = np.isin(pids, shuffled[:n_val])
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)


def split_frame(
    df: pd.DataFrame, val_fraction: float = 0.1, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`patient_split`, returned as two DataFrames.

    The frames keep ``df``'s index labels (so ``df.loc[train.index]`` finds the rows again) and
    its ``attrs``.

    Returns
    -------
    train, val : DataFrame
    """
    train_rows, val_rows = patient_split(df, val_fraction=val_fraction, seed=seed)
    return df.iloc[train_rows].copy(), df.iloc[val_rows].copy()


def _patients(df: pd.DataFrame) -> np.ndarray:
    """Patient id of every row as a numpy array of str, [N]."""
    if "Path" not in df.columns:
        raise LabelFileError(
            f"patient_split: the labels have no 'Path' column "
            f"(columns: {list(df.columns)[:6]}...); "
            "expected a CheXpert label frame"
        )
    pids = patient_ids(df)
    if pids.isna().any():
        row = int(np.flatnonzero(pids.isna().to_numpy())[0])
        raise LabelFileError(
            f"patient_split: row {row} has Path {df['Path'].iloc[row]!r}, which has no patient id; "
            "expected '<dataset>/<split>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg'"
        )
    return pids.to_numpy(dtype=str)
