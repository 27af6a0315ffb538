"""LRP gated by Grad-CAM: the poster's closing idea, in the spirit of Guided Grad-CAM.

Guided Grad-CAM (Selvaraju et al. 2017) multiplies a pixel-precise gradient map by the coarse,
class-discriminative Grad-CAM map. Here the pixel-precise map is LRP relevance:

``combined^c = R^c_LRP * G^c / max(G^c)``

with ``G^c`` the upsampled, rectified Grad-CAM map of class ``c`` (a gate in [0, 1], all-zero
when Grad-CAM sees no positive evidence). It keeps LRP's resolution and sign (negative relevance
stays visible) inside the regions Grad-CAM finds class-specific, and suppresses LRP's relevance
elsewhere (e.g. on edges that every class's map shares). Its sum is no longer conserved: it is a
display and localisation map, not a decomposition of the logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from chexlib.explain.gradcam import gradcam
from chexlib.explain.lrp import lrp
from chexlib.methods import DEFAULT_COMPOSITE


def gradcam_gate(cam: torch.Tensor) -> torch.Tensor:
    """Each rectified map [..., H, W] divided by its maximum (all-zero maps stay zero)."""
    peak = cam.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp(min=torch.finfo(cam.dtype).tiny),
                       torch.zeros_like(cam))


#: The methods (registry names) each combination is made of: its LRP composite and its CAM.
#: A caller that already has both parts' maps combines them with :func:`combine` instead of
#: computing them again.
PARTS: dict[str, tuple[str, str]] = {"lrp_gradcam": (DEFAULT_COMPOSITE, "gradcam")}


def combine(relevance, cam):
    """``relevance * cam / max(cam)`` per map (tensors or arrays [..., H, W]): the combination of
    an LRP map and its rectified Grad-CAM map."""
    as_tensor = not isinstance(relevance, torch.Tensor)
    r = torch.as_tensor(relevance)
    out = r * gradcam_gate(torch.as_tensor(cam, dtype=r.dtype))
    return out.numpy() if as_tensor else out


def lrp_gradcam(model: nn.Module, images: torch.Tensor,
                classes: Sequence[str | int] | str | int | None = None,
                composite: str = DEFAULT_COMPOSITE, layer: str | None = None,
                batch_size: int | None = None) -> torch.Tensor:
    """LRP relevance gated by the normalised Grad-CAM map, [B, K, H, W] (module docstring)."""
    relevance = lrp(model, images, classes, composite=composite, batch_size=batch_size)
    cam = gradcam(model, images, classes, layer=layer, batch_size=batch_size)
    return combine(relevance, cam)
