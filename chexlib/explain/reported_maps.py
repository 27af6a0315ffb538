"""Maps of a run's reported images by method name, as notebooks 04 and 05 need them.

``outcome_explainer``  the ``explain(rows, observation)`` callable of the outcome galleries
                       (:func:`chexlib.plots.galleries.outcome_gallery`)
``fill_store``         the maps of all classes of the first n reported images, into the heatmap
                       store (:meth:`chexlib.explain.store.MapStore.fill`), timed

Methods are named as in :func:`chexlib.explain.dispatch.explain`: an LRP composite
(``epsilon_plus_flat``), ``gradcam`` / ``gradcam_pp`` on the default layer, ``gradcam-<layer>``
on another (:func:`chexlib.methods.cam_method_name`), ``lrp_gradcam``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from chexlib.explain.dispatch import explain
from chexlib.explain.store import MapStore


def outcome_explainer(model: nn.Module, reported, method: str,
                      device: str | torch.device = "cpu"
                      ) -> Callable[[list[int], str], torch.Tensor]:
    """``explain(rows, observation) -> maps [len(rows), S, S]`` of ``method`` on reported rows.

    Parameters
    ----------
    model : nn.Module
    reported : ReportedImages
    method : str
        A method name of :func:`chexlib.explain.dispatch.explain`.
    device : str or torch.device
        Where the images go (the model's device).
    """
    def explain_rows(rows: list[int], observation: str) -> torch.Tensor:
        return explain(model, reported.images(rows).to(device), method, [observation])[:, 0]

    return explain_rows


def fill_store(store: MapStore, model: nn.Module, reported, method: str, n: int,
               device: str | torch.device = "cpu", batch_size: int = 16) -> tuple[int, float]:
    """Store the maps of all classes of the first ``n`` reported images under ``method``.

    Only images without a valid stored map (missing, corrupt or of another model) are computed,
    ``batch_size`` at a time.

    Returns
    -------
    computed : int
        How many images were explained (the others, of ``min(n, len(reported))``, were stored).
    seconds : float
        Wall-clock time of the whole fill.
    """
    paths = [reported.paths[r] for r in range(min(n, len(reported)))]
    start = time.perf_counter()
    computed = store.fill(method, paths,
                          lambda positions: explain(model, reported.images(positions).to(device),
                                                    method),
                          batch_size=batch_size)
    return computed, time.perf_counter() - start
