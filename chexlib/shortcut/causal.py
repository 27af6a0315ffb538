"""The causal test: how much each logit moves when the confounder is taken out of the image.

The phantom renders every stored image again without its drain, the rest unchanged
(:func:`chexlib.phantom.counterfactual.render_stored`), so the change of a class's logit is the
drain's causal effect on that prediction for that image: no inpainting, no guess of what lies
under the drain. :func:`logit_changes` measures it with the model; :func:`causal_table` reports
the mean change per observation and subgroup with a patient-bootstrap interval. A model that
uses the drain for pneumothorax shows a negative mean change whose interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from chexlib.errors import MetricInputError
from chexlib.heatmap_quality.summaries import bootstrap_mean

__all__ = ["CAUSAL_COLUMNS", "causal_table", "logit_changes"]

#: Columns of :func:`causal_table` (and of ``tables/07_causal.csv``).
CAUSAL_COLUMNS = ("observation", "subgroup", "n", "logit_change_mean", "low", "high")


@torch.no_grad()
def logit_changes(model: nn.Module, with_confounder: torch.Tensor,
                  without_confounder: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Logits of the images without the confounder minus those with it.

    Parameters
    ----------
    model : nn.Module
        In eval mode on the tensors' device; float32 (the effect is measured, not rounded).
    with_confounder, without_confounder : Tensor [N, 3, S, S]
        The same images, preprocessed as the model reads them, with and without the confounder.

    Returns
    -------
    ndarray float64 [N, C]
        Negative where removing the confounder lowers the class's logit.
    """
    if with_confounder.shape != without_confounder.shape:
        raise MetricInputError(f"images with the confounder have shape "
                               f"{tuple(with_confounder.shape)} and without it "
                               f"{tuple(without_confounder.shape)}; expected the same images")
    model.eval()
    changes = []
    for start in range(0, len(with_confounder), batch_size):
        part = slice(start, start + batch_size)
        changes.append((model(without_confounder[part]) - model(with_confounder[part])).double())
    return torch.cat(changes).cpu().numpy() if changes else np.zeros((0, 0))


def causal_table(changes, subgroups, patients, classes: Sequence[str],
                 observations: Sequence[str] | None = None, n_boot: int = 1000,
                 seed: int = 0) -> pd.DataFrame:
    """Mean logit change per observation and subgroup, with patient-bootstrap intervals.

    Parameters
    ----------
    changes : array-like [N, C]
        :func:`logit_changes` of the images that had the confounder removed.
    subgroups, patients : array-like [N]
        The subgroup (:func:`chexlib.shortcut.subgroups.drain_subgroups`) and patient of each.
    classes : sequence of str
        The C class names of ``changes``' columns.
    observations : sequence of str, optional
        The rows to report (default: every class).

    Returns
    -------
    DataFrame
        :data:`CAUSAL_COLUMNS`; per observation, one row per subgroup present and one for all
        of them together ("all").
    """
    values = np.asarray(changes, float)
    groups, patients = np.asarray(subgroups).astype(str), np.asarray(patients)
    if values.ndim != 2 or values.shape[1] != len(classes):
        raise MetricInputError(f"changes have shape {values.shape}; expected [N, {len(classes)}] "
                               "(one column per class)")
    if not (len(values) == len(groups) == len(patients)):
        raise MetricInputError(f"changes, subgroups and patients have {len(values)}, "
                               f"{len(groups)} and {len(patients)} rows; expected one per image")
    missing = [o for o in observations or () if o not in classes]
    if missing:
        raise MetricInputError(f"observations {missing} are not among the classes {list(classes)}")
    rows = []
    for name in observations or classes:
        column = values[:, list(classes).index(name)]
        for subgroup in ["all", *sorted(set(groups), key=_order)]:
            chosen = np.ones(len(groups), bool) if subgroup == "all" else groups == subgroup
            if chosen.any():
                mean, low, high = bootstrap_mean(column[chosen], n_boot, seed,
                                                 groups=patients[chosen])
                rows.append((name, subgroup, int(chosen.sum()), mean, low, high))
    return pd.DataFrame(rows, columns=list(CAUSAL_COLUMNS))


def _order(subgroup: str) -> int:
    from chexlib.shortcut.subgroups import SUBGROUPS

    return SUBGROUPS.index(subgroup) if subgroup in SUBGROUPS else len(SUBGROUPS)
