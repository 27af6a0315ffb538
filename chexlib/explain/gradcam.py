"""Grad-CAM (Selvaraju et al. 2017): channel weights are the spatially averaged gradients.

``w^c_k = mean_ij dy^c / dA^k_ij``; map ``= ReLU(sum_k w^c_k A^k)``, upsampled. At the head's
ReLU of a global-average-pool + linear head this equals CAM (Zhou et al. 2016): the weights are
the classifier's row of class ``c`` divided by ``h * w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.explain.cam import CAM


class GradCAM(CAM):
    """Grad-CAM on one layer of a chexlib DenseNet-121 (see :class:`~chexlib.explain.cam.CAM`)."""

    name = "gradcam"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(-2, -1))


def gradcam(model: nn.Module, images: torch.Tensor,
            classes: Sequence[str | int] | str | int | None = None, layer: str | None = None,
            relu: bool = True, batch_size: int | None = None, return_low_res: bool = False):
    """Grad-CAM maps of the requested classes from one forward pass, [B, K, H, W].

    Parameters
    ----------
    model : nn.Module
        A chexlib DenseNet-121 (untouched).
    images : Tensor [B, 3, H, W]
        Normalised images.
    classes : sequence of names or indices, a name, an index, or None (all 14)
    layer : str, optional
        Module name; default the head's ReLU (the rectified final feature maps). A transition or
        dense block gives a finer map (:func:`chexlib.explain.cam.layer_names` lists them).
    relu : bool
        Rectify before upsampling (the published method); False keeps the signed map.
    batch_size : int, optional
    return_low_res : bool
        Also return the maps at the layer's resolution [B, K, h, w].

    Returns
    -------
    Tensor [B, K, H, W] (and [B, K, h, w]), on the images' device; not min-max normalised.

    Raises
    ------
    ParameterError
        Unknown class or layer name (the message lists the valid ones), malformed images.
    """
    return GradCAM(model, layer)(images, classes, relu=relu, batch_size=batch_size,
                                 return_low_res=return_low_res)
