"""One entry point for every explanation method, by name.

The names are those of the registry, :mod:`chexlib.methods`: each LRP composite
(``epsilon_plus_flat``, ...), ``gradcam`` and ``gradcam_pp`` on the default layer,
``gradcam-<layer>`` / ``gradcam_pp-<layer>`` on another (:func:`chexlib.methods.cam_method_name`),
and the combination ``lrp_gradcam`` (:mod:`chexlib.explain.combined`). :func:`explain` calls the
function the method's entry names; the heatmap store, the browser and the comparison use these
names, so a method is available everywhere once it is registered there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.methods import method_names, parse_method, resolve_method

__all__ = ["explain", "method_names", "parse_method"]


def explain(model: nn.Module, images: torch.Tensor, method: str,
            classes: Sequence[str | int] | str | int | None = None,
            batch_size: int | None = None) -> torch.Tensor:
    """Maps [B, K, H, W] of the requested classes by the named method (CAM maps rectified).

    Raises
    ------
    ParameterError
        An unknown method name (:func:`parse_method`), or what the method's function refuses.
    """
    entry, keywords = resolve_method(method)
    return entry(model, images, classes, batch_size=batch_size, **keywords)
