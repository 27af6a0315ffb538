"""Maps of a run's reported images by method name, as notebooks 04 and 05 need them.

``outcome_explainer``  the ``explain(rows, observation)`` callable of the outcome galleries
                       (:func:`chexlib.plots.galleries.outcome_gallery`)
``fill_store``         the maps of all classes of the first n reported images, into the heatmap
                       store (:meth:`chexlib.explain.store.MapStore.fill`), timed
``fill_cases``         the maps of all classes of some reported images under several methods
                       (the cases a notebook shows, so that its browser opens them at once)

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
from chexlib.errors import ParameterError
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


def focus_rows(reported, observations, outcomes=("TP", "FP", "FN"), per_outcome: int = 1
               ) -> list[int]:
    """The reported rows the notebooks point at: for each observation and outcome, the
    ``per_outcome`` most confident (each gallery's first cases), sorted, without repeats."""
    rows = {r for name in observations for kind in outcomes
            for r in reported.pick(name, kind, per_outcome)}
    return sorted(int(r) for r in rows)


def fill_store(store: MapStore, model: nn.Module, reported, method: str, n: int,
               device: str | torch.device = "cpu", batch_size: int = 16,
               extra_rows=()) -> tuple[int, float]:
    """Store the maps of all classes of the first ``n`` reported images under ``method``, and
    of ``extra_rows`` (e.g. :func:`focus_rows`: the cases the galleries show, so that the
    browser opens them at once).

    Only images without a valid stored map (missing, corrupt or of another model) are computed,
    ``batch_size`` at a time.

    Returns
    -------
    computed : int
        How many images were explained (the others were stored already).
    seconds : float
        Wall-clock time of the whole fill.
    """
    bad = [r for r in extra_rows if not 0 <= int(r) < len(reported)]
    if bad:
        raise ParameterError(f"extra_rows={bad}: expected reported rows, 0 to "
                             f"{len(reported) - 1}")
    rows = sorted({*range(min(n, len(reported))), *(int(r) for r in extra_rows)})
    paths = [reported.paths[r] for r in rows]
    start = time.perf_counter()
    def compute(positions):  # positions index ``paths``, not the reported rows
        images = reported.images([rows[p] for p in positions]).to(device)
        return explain(model, images, method)

    computed = store.fill(method, paths, compute, batch_size=batch_size)
    return computed, time.perf_counter() - start


def fill_cases(store: MapStore, model: nn.Module, reported, methods, rows,
               device: str | torch.device = "cpu") -> tuple[int, float]:
    """Store the maps of all classes of reported ``rows`` under each of ``methods``
    (:func:`fill_store` with no leading images), e.g. the cases a notebook shows.

    Returns
    -------
    computed : int
        (method, image) maps explained; the others were stored already.
    seconds : float
        Wall-clock time of the whole fill.
    """
    start = time.perf_counter()
    computed = sum(fill_store(store, model, reported, method, 0, device=device,
                              extra_rows=rows)[0] for method in methods)
    return computed, time.perf_counter() - start
