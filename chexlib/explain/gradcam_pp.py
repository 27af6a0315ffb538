"""Grad-CAM++ (Chattopadhyay et al. 2018): pixel-weighted positive gradients.

``a^c_kij = g^2 / (2 g^2 + sum_ij(A^k) g^3)`` with ``g = dy^c / dA^k_ij`` (0 where g = 0),
``w^c_k = sum_ij a^c_kij ReLU(g)``: the closed form for an exponential output that
pytorch-grad-cam's ``GradCAMPlusPlus`` also uses. Same machinery as Grad-CAM, other weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.explain.cam import CAM

_EPS = 1e-6  # keeps a zero denominator finite (pytorch-grad-cam's value)


class GradCAMPlusPlus(CAM):
    """Grad-CAM++ on one layer of a chexlib DenseNet-121."""

    name = "gradcam_pp"

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        g2 = gradients.pow(2)
        g3 = g2 * gradients
        total = activations.sum(dim=(-2, -1))[:, None, :, None, None]  # [B, 1, C, 1, 1]
        alpha = g2 / (2 * g2 + total * g3 + _EPS)
        alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
        return (alpha * gradients.clamp(min=0)).sum(dim=(-2, -1))


def gradcam_pp(model: nn.Module, images: torch.Tensor,
               classes: Sequence[str | int] | str | int | None = None, layer: str | None = None,
               relu: bool = True, batch_size: int | None = None, return_low_res: bool = False):
    """Grad-CAM++ maps, [B, K, H, W]; parameters and result as :func:`chexlib.explain.gradcam`."""
    return GradCAMPlusPlus(model, layer)(images, classes, relu=relu, batch_size=batch_size,
                                         return_low_res=return_low_res)
