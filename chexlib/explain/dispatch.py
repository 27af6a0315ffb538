"""One entry point for every explanation method, by name.

The names are those of :mod:`chexlib.methods`: each LRP composite (``epsilon_plus_flat``, ...),
``gradcam`` and ``gradcam_pp`` on the default layer, ``gradcam-<layer>`` /
``gradcam_pp-<layer>`` on another (:func:`chexlib.methods.cam_method_name`), and the combination
``lrp_gradcam`` (:mod:`chexlib.explain.combined`). The heatmap store,
the browser and the comparison use these names, so a method is available everywhere once it is
listed here. :func:`cam_maps_by_layer` compares the CAM methods across layers (notebook 05).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.errors import ParameterError
from chexlib.explain.combined import lrp_gradcam
from chexlib.explain.gradcam import gradcam
from chexlib.explain.gradcam_pp import gradcam_pp
from chexlib.explain.lrp import lrp
from chexlib.methods import CAM_LAYERS, CAM_METHODS, COMBINED_METHODS, LRP_COMPOSITES

_CAM_FUNCTIONS = {"gradcam": gradcam, "gradcam_pp": gradcam_pp}


def method_names(cam_layers: Sequence[str] = (CAM_LAYERS[-1],)) -> list[str]:
    """Every method name: the LRP composites, then each CAM method on each of ``cam_layers``."""
    cams = [name if layer == CAM_LAYERS[-1] else f"{name}-{layer}"
            for name in CAM_METHODS for layer in cam_layers]
    return [*LRP_COMPOSITES, *cams, *COMBINED_METHODS]


def parse_method(method: str) -> tuple[str, str | None]:
    """``("lrp", composite)`` or ``(cam method, layer)`` for a method name.

    Raises
    ------
    ParameterError
        An unknown name; the message lists the valid ones.
    """
    if method in LRP_COMPOSITES:
        return "lrp", method
    if method in COMBINED_METHODS:
        return method, None
    name, _, layer = str(method).partition("-")
    if name in CAM_METHODS and (not layer or layer in CAM_LAYERS):
        return name, layer or CAM_LAYERS[-1]
    raise ParameterError(
        f"method={method!r}: unknown explanation method; expected one of "
        f"{', '.join(method_names())} (a CAM method may name a layer: gradcam-features.denseblock3)")


def explain(model: nn.Module, images: torch.Tensor, method: str,
            classes: Sequence[str | int] | str | int | None = None,
            batch_size: int | None = None) -> torch.Tensor:
    """Maps [B, K, H, W] of the requested classes by the named method (CAM maps rectified)."""
    kind, detail = parse_method(method)
    if kind == "lrp":
        return lrp(model, images, classes, composite=detail, batch_size=batch_size)
    if kind == "lrp_gradcam":
        return lrp_gradcam(model, images, classes, batch_size=batch_size)
    return _CAM_FUNCTIONS[kind](model, images, classes, layer=detail, batch_size=batch_size)


def cam_maps_by_layer(model: nn.Module, images: torch.Tensor, observation: str | int,
                      layers: Sequence[str],
                      methods: Sequence[str] = tuple(_CAM_FUNCTIONS)
                      ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[int, int]]]:
    """Every CAM method's map of one class on each layer, and each layer's map size.

    Parameters
    ----------
    model : nn.Module
    images : Tensor [1, 3, H, W]
        One normalised image (the first is taken).
    observation : str or int
        The class explained.
    layers : sequence of str
        Module names (:data:`chexlib.methods.CAM_LAYERS`).
    methods : sequence of str
        CAM methods (``gradcam``, ``gradcam_pp``): the outer loop.

    Returns
    -------
    maps : dict ``"<method> · <layer>"`` -> Tensor [H, W]
        Upsampled to the image, methods outer, layers inner.
    sizes : dict layer -> (h, w)
        The size of the layer's map before upsampling.
    """
    maps, sizes = {}, {}
    for method in methods:
        for layer in layers:
            upsampled, low = _CAM_FUNCTIONS[method](model, images, [observation], layer=layer,
                                                    return_low_res=True)
            maps[f"{method} · {layer}"] = upsampled[0, 0]
            sizes[layer] = tuple(low.shape[-2:])
    return maps, sizes
