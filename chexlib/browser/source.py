"""Maps of a run's reported images, by method: from the heatmap store, else computed and stored."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from chexlib.explain.dispatch import explain
from chexlib.explain.store import MapStore
from chexlib.methods import method_names, parse_method


class MapSource:
    """All 14 maps of one reported image under one method, computed at most once.

    Parameters
    ----------
    reported : ReportedImages
    store : MapStore
        The run's heatmap store (bound to the model's fingerprint, so maps of an earlier model
        are recomputed).
    model : nn.Module
        The model the maps explain.
    methods : sequence of str, optional
        Method names offered; default every method of the registry
        (:func:`chexlib.methods.method_names`, read when the source is made).
    device : str or torch.device
        Where maps missing from the store are computed.
    """

    def __init__(self, reported, store: MapStore, model: nn.Module,
                 methods: Sequence[str] | None = None, device: str | torch.device = "cpu") -> None:
        self.reported, self.store, self.model = reported, store, model
        self.methods = list(methods) if methods is not None else method_names()
        for name in self.methods:
            parse_method(name)  # unknown names fail here, not on the first click
        self.device = torch.device(device)
        self.computed = 0  # how many images were computed on demand (not found in the store)

    def maps(self, method: str, row: int) -> np.ndarray:
        """float32 [14, S, S] maps of reported row ``row`` under ``method``."""
        def compute():
            self.computed += 1
            images = self.reported.images([row]).to(self.device)
            return explain(self.model, images, method)[0].detach().cpu()

        return self.store.get_or_compute(method, self.reported.paths[row], compute)
