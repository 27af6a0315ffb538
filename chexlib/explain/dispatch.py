"""One entry point for every explanation method, by name.

The names are those of the registry, :mod:`chexlib.methods`: each LRP composite
(``epsilon_plus_flat``, ...), ``gradcam`` and ``gradcam_pp`` on the default layer,
``gradcam-<layer>`` / ``gradcam_pp-<layer>`` on another (:func:`chexlib.methods.cam_method_name`),
and the combination ``lrp_gradcam`` (:mod:`chexlib.explain.combined`). :func:`explain` calls the
function the method's entry names; the heatmap store, the browser and the comparison use these
names, so a method is available everywhere once it is registered there.
:func:`cam_maps_by_layer` compares the CAM methods across layers (notebook 05).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.methods import CAM_METHODS, cam_method_name, method_names, parse_method, resolve_method

__all__ = ["cam_maps_by_layer", "explain", "method_names", "parse_method"]


def explain(model: nn.Module, images: torch.Tensor, method: str,
            classes: Sequence[str | int] | str | int | None = None,
            batch_size: int | None = None) -> torch.Tensor:
    """Maps [B, K, H, W] of the requested classes by the named method (CAM maps rectified).

    ``classes``: names or indices shared by every image, None (all), or an integer array [B, K]
    of each image's own classes (``-1``: none, a zero map;
    :func:`chexlib.explain.inputs.class_targets`).

    Raises
    ------
    ParameterError
        An unknown method name (:func:`parse_method`), or what the method's function refuses.
    """
    entry, keywords = resolve_method(method)
    return entry(model, images, classes, batch_size=batch_size, **keywords)


def cam_maps_by_layer(model: nn.Module, images: torch.Tensor, observation: str | int,
                      layers: Sequence[str], methods: Sequence[str] | None = None
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
    methods : sequence of str, optional
        CAM methods of the registry (default: all, ``gradcam`` and ``gradcam_pp``): the outer loop.

    Returns
    -------
    maps : dict ``"<method> · <layer>"`` -> Tensor [H, W]
        Upsampled to the image, methods outer, layers inner.
    sizes : dict layer -> (h, w)
        The size of the layer's map before upsampling.
    """
    maps, sizes = {}, {}
    for method in (list(CAM_METHODS) if methods is None else methods):
        for layer in layers:
            entry, keywords = resolve_method(cam_method_name(method, layer))
            upsampled, low = entry(model, images, [observation], return_low_res=True, **keywords)
            maps[f"{method} · {layer}"] = upsampled[0, 0]
            sizes[layer] = tuple(low.shape[-2:])
    return maps, sizes
