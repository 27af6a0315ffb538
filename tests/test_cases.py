"""chexlib.cases: picking images by observation and outcome."""

import numpy as np
import pandas as pd
import pytest

from chexlib.cases import pick_by_outcome
from chexlib.observations import OBSERVATIONS


def _outcomes():
    table = pd.DataFrame("TN", index=range(6), columns=list(OBSERVATIONS))
    table.loc[[1, 3, 4], "Edema"] = "TP"
    table.loc[[2], "Edema"] = "FN"
    table.insert(0, "Path", [f"x/valid/patient{i}/study1/view1_frontal.jpg" for i in range(6)])
    return table


def test_pick_by_outcome_most_confident_first():
    probs = np.zeros((6, 14))
    probs[[1, 3, 4], OBSERVATIONS.index("Edema")] = [0.6, 0.9, 0.7]
    assert pick_by_outcome(_outcomes(), "Edema", "TP", 2, probs) == [3, 4]
    assert pick_by_outcome(_outcomes(), "Edema", "FN", 5, probs) == [2]
    assert pick_by_outcome(_outcomes(), "Edema", "FP", 5, probs) == []  # none: an empty choice
    assert sorted(pick_by_outcome(_outcomes(), "Edema", "TP", 9)) == [1, 3, 4]


def test_pick_by_outcome_errors():
    with pytest.raises(ValueError, match="expected one of TP, FP, FN, TN"):
        pick_by_outcome(_outcomes(), "Edema", "XX", 1)
    with pytest.raises(ValueError, match="unknown observation 'Oedema'"):
        pick_by_outcome(_outcomes(), "Oedema", "TP", 1)
