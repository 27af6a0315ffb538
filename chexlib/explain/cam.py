"""Class activation maps: the algorithm Grad-CAM and Grad-CAM++ share.

A CAM method looks at one layer's activations ``A`` [C, h, w] and the gradients of a class's
logit ``y^c`` with respect to them. The method decides the channel weights ``w^c_k`` from the
activations and gradients (:meth:`CAM.channel_weights`); the map is ``sum_k w^c_k A^k``,
optionally rectified (ReLU, before upsampling, as in the original method), then upsampled
bilinearly to the input size. Maps are not min-max normalised: that is a display choice, and it
would hide which class is stronger.

Every requested class comes from one forward pass: the layer's output is detached into a leaf
that requires a gradient (so nothing before the layer keeps an autograd graph), and each class
needs only a backward pass from its logit to that layer. For the default layer, the head's ReLU,
that is a pooling and a linear layer: nearly free.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from chexlib.errors import ParameterError
from chexlib.explain.inputs import (
    check_batch_size,
    check_images,
    class_targets,
    device_dtype,
    explainable,
    num_outputs,
    target_seed,
)
from chexlib.methods import CAM_LAYERS

#: The rectified final feature maps (the head's ``nn.ReLU`` module): the study's "rectified conv
#: feature maps". Not ``norm5``: see ``chexlib.explain.inputs`` and the README.
DEFAULT_LAYER = CAM_LAYERS[-1]


def layer_names(model: nn.Module) -> list[str]:
    """The conv-stage modules a CAM can look at: DenseNet-121's stages and the head's ReLU.

    Any named submodule of a stage (e.g. ``features.denseblock3.denselayer24``) works too.
    """
    stages = [name for name, _ in model.named_modules() if name.count(".") == 1
              and name.startswith("features.")]
    return stages + [DEFAULT_LAYER]


def find_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """The module called ``layer`` (default :data:`DEFAULT_LAYER`).

    Raises
    ------
    ParameterError
        No such module, or one outside the convolutional stages; the message lists the valid ones.
    """
    name = DEFAULT_LAYER if layer is None else layer
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not (name == DEFAULT_LAYER or name.startswith("features."))\
            or name not in modules:
        raise ParameterError(
            f"layer={layer!r}: not a convolutional stage of the model; expected one of "
            f"{', '.join(layer_names(model))} (or a named submodule of a features.* stage)")
    return name, modules[name]


class CAM:
    """A class-activation-map method; subclasses define :meth:`channel_weights`.

    Parameters
    ----------
    model : nn.Module
        A chexlib DenseNet-121, never modified (its explainable copy is used).
    layer : str, optional
        Module name (:func:`layer_names`); default :data:`DEFAULT_LAYER`.
    """

    #: The method's name in the heatmap store and in figures.
    name = "cam"

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        self.net = explainable(model)
        self.layer, self.module = find_layer(self.net, layer)

    def channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """Weights [B, K, C] from activations [B, C, h, w] and gradients [B, K, C, h, w]."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, classes: Sequence[str | int] | str | int | None = None,
                 relu: bool = True, batch_size: int | None = None,
                 return_low_res: bool = False):
        """Maps of the requested classes, [B, K, H, W] (and [B, K, h, w] with ``return_low_res``).

        Parameters
        ----------
        images : Tensor [B, 3, H, W]
            Normalised images.
        classes : names, indices or None (all outputs)
            Or an integer array [B, K]: per image its own classes, ``-1`` for none (zero map).
        relu : bool
            Rectify the low-resolution map before upsampling (the method as published); False
            keeps the signed map (negative where the weighted sum is negative).
        batch_size : int, optional
            Images per forward pass; None: all at once.
        return_low_res : bool
            Also return the maps at the layer's resolution.
        """
        images = check_images(images)
        targets = class_targets(classes, len(images), num_outputs(self.net))
        step = check_batch_size(batch_size, len(images))
        low = torch.cat([self._low_res(chunk, chunk_targets) for chunk, chunk_targets
                         in zip(images.split(step), targets.split(step))])
        if relu:
            low = low.clamp(min=0)
        maps = F.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False)
        maps, low = maps.to(images.device), low.to(images.device)
        return (maps, low) if return_low_res else maps

    def _low_res(self, chunk: torch.Tensor, targets) -> torch.Tensor:
        activations, gradients = self.activations_and_gradients(chunk, targets)
        weights = self.channel_weights(activations, gradients)
        return torch.einsum("bkc,bchw->bkhw", weights, activations)

    def activations_and_gradients(self, chunk: torch.Tensor, targets
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass; the layer's activations [b, C, h, w] and, per target column, the
        gradients of each image's logit with respect to them [b, K, C, h, w].

        ``targets``: logit indices (the same for every image) or a LongTensor [b, K] of each
        image's classes (:func:`~chexlib.explain.inputs.class_targets`; ``-1``: zero gradient).
        """
        if not isinstance(targets, torch.Tensor):
            targets = class_targets(targets, len(chunk), num_outputs(self.net))
        device, dtype = device_dtype(self.net)
        captured: dict[str, torch.Tensor] = {}

        def keep(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                raise ParameterError(f"layer={self.layer!r} outputs no [B, C, h, w] feature maps")
            captured["a"] = output.detach().requires_grad_(True)
            return captured["a"]  # the rest of the forward pass starts from this leaf

        handle = self.module.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logits = self.net(chunk.detach().to(device=device, dtype=dtype))
                activations = captured["a"]
                seeds = [target_seed(logits, targets[:, n]) for n in range(targets.shape[1])]
                last = max((n for n, seed in enumerate(seeds) if seed is not None), default=-1)
                # Images are independent (eval mode), so one backward pass from the batch's
                # seeded logits gives each image the gradient of its own class.
                gradients = [
                    torch.zeros_like(activations) if seed is None else
                    torch.autograd.grad(logits, activations, grad_outputs=seed,
                                        retain_graph=n < last)[0]
                    for n, seed in enumerate(seeds)
                ]
        finally:
            handle.remove()
        return activations.detach(), torch.stack(gradients, dim=1)
