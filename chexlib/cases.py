"""Choosing which predictions to explain: images by observation and outcome (TP/FP/FN/TN).

The original study picked "correct" and "incorrect" predictions by hand. Here they come from
``outcomes.csv`` (notebook 03), which labels every (reported image, observation) at a threshold
chosen on the internal validation split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexlib.artefacts import OUTCOME_VALUES
from chexlib.observations import observation_index


def pick_by_outcome(outcomes: pd.DataFrame, observation: str, outcome: str, n: int,
                    probs: np.ndarray | None = None, seed: int = 0) -> list[int]:
    """Rows of ``outcomes`` whose prediction for ``observation`` has the given outcome.

    Parameters
    ----------
    outcomes : DataFrame
        ``outcomes.csv`` (``Path`` + one column per observation with TP/FP/FN/TN).
    observation : str
        An observation name.
    outcome : {"TP", "FP", "FN", "TN"}
    n : int
        How many rows at most.
    probs : ndarray [N, 14], optional
        Predicted probabilities; when given, the most confident cases come first (highest
        probability for TP/FP, lowest for FN/TN), which are the instructive ones. Otherwise a
        seeded random choice.

    Returns
    -------
    list of int
        Row positions, fewer than ``n`` (possibly none) when the outcome is rare.
    """
    if outcome not in OUTCOME_VALUES:
        raise ValueError(f"outcome {outcome!r} is unknown; expected one of {', '.join(OUTCOME_VALUES)}")
    j = observation_index(observation)
    rows = np.flatnonzero(outcomes[outcomes.columns[1 + j]].to_numpy() == outcome)
    if probs is not None:
        p = np.asarray(probs)[rows, j]
        rows = rows[np.argsort(-p if outcome in ("TP", "FP") else p, kind="stable")]
    else:
        rows = np.random.default_rng(seed).permutation(rows)
    return [int(r) for r in rows[:n]]
