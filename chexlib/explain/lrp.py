"""LRP heatmaps for any set of classes from one forward pass.

:func:`lrp` explains the DenseNet-121's logits with a named composite
(:mod:`chexlib.explain.composites`). Every requested class shares one forward pass: the
composite's hooks are registered once, the batch goes forward once, then one backward pass per
class (``retain_graph=True``) seeds the output with that class's logit. Batching the backward
passes (``is_grads_batched``) gives the same maps but ran 2x slower on the project's CPUs.

Relevance is seeded with ``one_hot * logit``, so a class's map sums to its logit minus what the
rules absorb. For the composites with a small epsilon on the classifier whose BatchNorms take
``Pass`` (``alpha2_beta1``, ``zplus``, ``epsilon_plus_flat``, ``epsilon_gamma_box``), only the
classifier bias absorbs anything: under LRP-epsilon the classifier passes on
``z * (z - b) / (z + eps * sign(z))`` of the seed ``z`` (``sign(0) = +1``), i.e. ``z - b`` up
to eps. The tests check this sum on a model with random BatchNorm statistics. (BatchNorm shifts
that light up exactly-zero features absorb a little more; see
:mod:`chexlib.explain.composites` and :mod:`chexlib.explain.conservation`.)

BatchNorm: the explainable copy keeps every BatchNorm unchanged (no folding). In DenseNet most
BatchNorms come *before* a ReLU and a convolution (BN -> ReLU -> Conv), where no linear folding
is possible; zennit's ``SequentialMergeBatchNorm`` also pairs DenseNet's layers wrongly across the
concatenations and corrupts the model. Under z+, alpha-beta, gamma, flat and z^B rules the
BatchNorms take zennit's ``Pass`` rule and the maps are conservative whatever the BatchNorm
statistics; under the epsilon rule they take that rule themselves, so their shifts absorb
relevance like biases (``chexlib.explain.composites`` explains why; the tests check both).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from zennit.core import BasicHook, Composite, ParamMod

from chexlib.errors import ParameterError
from chexlib.explain.composites import LRP_COMPOSITES, make_composite
from chexlib.explain.inputs import (
    check_batch_size,
    check_images,
    class_indices,
    device_dtype,
    explainable,
    explainable_copy,
    is_explainable,
    num_outputs,
)

__all__ = ["SharedModifiedForwards", "class_indices", "explainable_copy", "is_explainable", "lrp"]

def lrp(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[str | int] | str | int | None = None,
    composite: str | Composite = "epsilon_plus_flat",
    batch_size: int | None = None,
    *,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LRP relevance maps of the requested classes, all from one forward pass per batch.

    Parameters
    ----------
    model : nn.Module
        A chexlib DenseNet-121, never modified: LRP runs on :func:`explainable_copy` of it (made
        once and reused while the model's weights do not change), or on ``model`` itself when it
        already is such a copy.
    images : Tensor, shape [B, 3, H, W]
        Normalised images, as the model takes them.
    classes : sequence of str or int, str, int or None
        Observation names (:data:`~chexlib.observations.OBSERVATIONS`) or logit indices; None
        explains every output.
    composite : str or zennit Composite
        A name from :data:`~chexlib.explain.composites.LRP_COMPOSITES`, or a composite from
        :func:`~chexlib.explain.composites.make_composite` (e.g. with other ``low``/``high``).
    batch_size : int, optional
        Images per forward pass; None: all at once. Memory grows with it, not with the classes.
    return_logits : bool
        Also return the logits of the forward passes.

    Returns
    -------
    relevance : Tensor, shape [B, K, H, W]
        Input relevance summed over the colour channels, K = number of requested classes, in the
        requested order; on the images' device.
    logits : Tensor, shape [B, num_outputs]
        Only with ``return_logits``.

    Raises
    ------
    ParameterError
        A ValueError: unknown composite or class names (the message lists the valid ones),
        malformed images or batch size.
    """
    net = explainable(model)
    images = check_images(images)
    indices = class_indices(classes, num_outputs(net))
    step = check_batch_size(batch_size, len(images))
    rules = make_composite(composite) if isinstance(composite, str) else _check_composite(composite)
    maps, logits = [], []
    with rules.context(net) as hooked:
        shared = SharedModifiedForwards(rules) if len(indices) > 1 else None
        for chunk in images.split(step):
            chunk_maps, chunk_logits = _relevance(hooked, chunk, indices)
            maps.append(chunk_maps.to(images.device))
            logits.append(chunk_logits.to(images.device))
            if shared is not None:
                shared.clear()  # the next chunk has other activations
    relevance = torch.cat(maps)
    return (relevance, torch.cat(logits)) if return_logits else relevance


def _relevance(
    hooked: nn.Module, chunk: torch.Tensor, indices: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass, one backward pass per class; returns [b, K, H, W] and [b, C]."""
    device, dtype = device_dtype(hooked)
    x = chunk.detach().to(device=device, dtype=dtype).requires_grad_(True)
    with torch.enable_grad():
        logits = hooked(x)
        maps = []
        for n, k in enumerate(indices):
            seed = torch.zeros_like(logits)
            seed[:, k] = logits[:, k].detach()
            # The hooks turn the gradient into relevance; keep the graph for the next class.
            (relevance,) = torch.autograd.grad(
                logits, x, grad_outputs=seed, retain_graph=n < len(indices) - 1
            )
            maps.append(relevance.sum(dim=1))
    return torch.stack(maps, dim=1), logits.detach()


class SharedModifiedForwards:
    """Let the rules of a registered composite reuse their modified forward passes across classes.

    A zennit rule (``BasicHook``) recomputes, in every backward pass, its layer's forward with
    modified inputs and weights (z+: the positive parts; gamma: four variants) and differentiates
    it. The modified outputs depend on the layer's input only, not on the class explained, and a
    convolution's or linear layer's input gradient needs only the (modified) weights. So for those
    layers each rule keeps, per forward pass, its modified outputs and weights (small: the layer's
    output size), and per class computes the input gradient directly (transposed convolution)
    and the cheap element-wise input modifications. The relevance is zennit's (tested against its
    attributor). Other layers (pools, BatchNorms) keep zennit's own backward.

    Parameters
    ----------
    composite : zennit Composite
        Already registered (inside ``composite.context(model)``).
    """

    def __init__(self, composite: Composite) -> None:
        self.caches: list[dict] = []
        for hook in list(composite.hook_refs):
            if isinstance(hook, BasicHook):
                cache: dict = {}
                self.caches.append(cache)
                # An instance attribute: zennit's backward wrapper calls hook.backward(...).
                hook.backward = self._backward(hook, cache)

    def clear(self) -> None:
        """Drop the kept outputs (call after the last class of a batch)."""
        for cache in self.caches:
            cache.clear()

    @staticmethod
    def _backward(hook: BasicHook, cache: dict):
        def backward(module, grad_input, grad_output):
            if not _has_direct_input_gradient(module):
                return type(hook).backward(hook, module, grad_input, grad_output)
            stored = hook.stored_tensors["input"][0]
            original = stored.detach()
            if cache.get("key") is not stored:  # a new forward pass: recompute once
                cache.clear()
                cache["key"] = stored
                cache["outputs"], cache["weights"] = _modified_outputs(hook, module, original)
            grad_outputs = hook.gradient_mapper(grad_output[0], cache["outputs"])
            if isinstance(grad_outputs, torch.Tensor):  # single-output rules (flat) return one
                grad_outputs = [grad_outputs]
            inputs = [in_mod(original) for in_mod in hook.input_modifiers]
            gradients = [
                _input_gradient(module, weight, grad, original.shape)
                for weight, grad in zip(cache["weights"], grad_outputs)
            ]
            relevance = hook.reducer(inputs, gradients)
            return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)

        return backward


def _has_direct_input_gradient(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


@torch.no_grad()
def _modified_outputs(hook: BasicHook, module: nn.Module, original: torch.Tensor):
    """The layer's outputs on the rule's modified inputs and weights, and those weights."""
    outputs, weights = [], []
    modifiers = zip(hook.input_modifiers, hook.param_modifiers, hook.output_modifiers)
    for in_mod, param_mod, out_mod in modifiers:
        with ParamMod.ensure(param_mod)(module) as modified:
            outputs.append(out_mod(modified.forward(in_mod(original))))
            weights.append(modified.weight.detach())
    return outputs, weights


def _input_gradient(module, weight, grad, input_shape):
    """Gradient of the (linear) layer's output w.r.t. its input, for upstream ``grad``."""
    if isinstance(module, nn.Linear):
        return grad @ weight
    return torch.nn.grad.conv2d_input(
        input_shape, weight, grad, module.stride, module.padding, module.dilation, module.groups
    )


def _check_composite(composite: object) -> Composite:
    if not isinstance(composite, Composite):
        raise ParameterError(
            f"composite={composite!r}: expected a zennit Composite or one of "
            f"{', '.join(LRP_COMPOSITES)}"
        )
    return composite
