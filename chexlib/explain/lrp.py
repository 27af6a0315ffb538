"""LRP heatmaps for any set of classes from one forward pass.

:func:`lrp` explains the DenseNet-121's logits with a named composite
(:mod:`chexlib.explain.composites`). Every requested class shares one forward pass: the
composite's hooks are registered once, the batch goes forward once, then one backward pass per
class (``retain_graph=True``) seeds the output with that class's logit. Batching the backward
passes (``is_grads_batched``) gives the same maps but ran 2x slower on the project's CPUs.

BatchNorm (``batchnorm``): ``"fold"``, the default, explains the canonized network
(:mod:`chexlib.explain.canonizers`: every BatchNorm merged into a linear layer, the same
function), where the BatchNorm shifts are biases and absorb their share of relevance like the
classifier's bias. ``"pass"`` explains the network as it is, BatchNorms kept (zennit's ``Pass``
rule, or the epsilon rule in ``epsilon`` and ``z``): the shifts' share is silently credited to
the pixels, so such maps sum to the logit minus the classifier bias "by construction", which
proves nothing about where relevance goes. The registry names both: ``epsilon_plus_flat``
(fold) and ``epsilon_plus_flat-pass``.

Relevance is seeded with ``one_hot * logit``. Where it goes is measured by
:mod:`chexlib.explain.conservation` (pixels, each kind of bias, epsilon).

Speed: :class:`~chexlib.explain.shared_forward.SharedModifiedForwards` lets the rules reuse
their modified forward passes across classes. It relies on zennit internals, so it checks its
assumptions when it starts and on its first use of each kind of layer, and falls back to zennit's
own backward where they fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from zennit.core import Composite

from chexlib import methods
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.errors import ParameterError
from chexlib.explain.composites import LRP_COMPOSITES, make_composite
from chexlib.explain.inputs import (
    check_batch_size,
    check_batchnorm,
    check_images,
    class_indices,
    class_targets,
    device_dtype,
    explainable,
    explainable_copy,
    is_explainable,
    num_outputs,
    target_seed,
)
from chexlib.explain.shared_forward import SharedModifiedForwards

__all__ = ["SharedModifiedForwards", "class_indices", "explainable_copy", "is_explainable", "lrp",
           "resolve_batchnorm"]

def lrp(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[str | int] | str | int | None = None,
    composite: str | Composite = DEFAULT_COMPOSITE,
    batch_size: int | None = None,
    *,
    batchnorm: str | None = None,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LRP relevance maps of the requested classes, all from one forward pass per batch.

    Parameters
    ----------
    model : nn.Module
        A chexlib DenseNet-121, never modified: LRP runs on :func:`explainable_copy` of it (made
        once per BatchNorm treatment and reused while the model's weights do not change), or on
        ``model`` itself when it already is such a copy.
    images : Tensor, shape [B, 3, H, W]
        Normalised images, as the model takes them.
    classes : sequence of str or int, str, int or None
        Observation names (:data:`~chexlib.observations.OBSERVATIONS`) or logit indices; None
        explains every output.
        Or an integer array [B, K]: per image its own K classes, ``-1`` where it has none (a
        zero map) — e.g. the (image, class) pairs of a comparison, K per forward pass.
    composite : str or zennit Composite
        A name from :data:`~chexlib.explain.composites.LRP_COMPOSITES`, or a composite from
        :func:`~chexlib.explain.composites.make_composite` (e.g. with other ``low``/``high``).
    batch_size : int, optional
        Images per forward pass; None: all at once. Memory grows with it, not with the classes.
    batchnorm : {"fold", "pass"}, optional
        ``"fold"``: BatchNorms merged into linear layers (the canonical form); ``"pass"``: kept.
        Default: the composite's own, ``"fold"`` but for the ``-pass`` names of the registry
        (and ``"fold"`` for a Composite object).
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
        malformed images or batch size, a ``batchnorm`` the composite's name contradicts.
    """
    rules = make_composite(composite) if isinstance(composite, str) else _check_composite(composite)
    net = explainable(model, resolve_batchnorm(composite, batchnorm))
    images = check_images(images)
    targets = class_targets(classes, len(images), num_outputs(net))
    step = check_batch_size(batch_size, len(images))
    maps, logits = [], []
    with rules.context(net) as hooked, SharedModifiedForwards(rules, hooked) as shared:
        for chunk, chunk_targets in zip(images.split(step), targets.split(step)):
            chunk_maps, chunk_logits = _relevance(hooked, chunk, chunk_targets)
            maps.append(chunk_maps.to(images.device))
            logits.append(chunk_logits.to(images.device))
            shared.clear()  # the next chunk has other activations
    relevance = torch.cat(maps)
    return (relevance, torch.cat(logits)) if return_logits else relevance


def resolve_batchnorm(composite: str | Composite, batchnorm: str | None) -> str:
    """The BatchNorm treatment of an :func:`lrp` call: ``batchnorm``, else the composite's own
    (``"fold"`` for a Composite object); a contradiction is a ParameterError."""
    own = methods.lrp_batchnorm(composite) if isinstance(composite, str) else None
    if batchnorm is None:
        return own or "fold"
    check_batchnorm(batchnorm)
    if own is not None and own != batchnorm:
        raise ParameterError(f"batchnorm={batchnorm!r}: composite {composite!r} means "
                             f"batchnorm={own!r}; name the composite with or without "
                             f"{methods.PASS_SUFFIX!r} instead")
    return batchnorm


def _relevance(
    hooked: nn.Module, chunk: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass, one backward pass per target column; returns [b, K, H, W], [b, C]."""
    device, dtype = device_dtype(hooked)
    x = chunk.detach().to(device=device, dtype=dtype).requires_grad_(True)
    with torch.enable_grad():
        logits = hooked(x)
        maps = []
        last = max((n for n in range(targets.shape[1]) if bool((targets[:, n] >= 0).any())),
                   default=-1)
        for n in range(targets.shape[1]):
            seed = target_seed(logits, targets[:, n], logits.detach())
            if seed is None:  # no image has a class in this slot
                maps.append(torch.zeros(x.shape[0], *x.shape[2:], device=device, dtype=dtype))
                continue
            # The hooks turn the gradient into relevance; keep the graph for the next class.
            (relevance,) = torch.autograd.grad(logits, x, grad_outputs=seed, retain_graph=n < last)
            maps.append(relevance.sum(dim=1))
    return torch.stack(maps, dim=1), logits.detach()


def _check_composite(composite: object) -> Composite:
    if not isinstance(composite, Composite):
        raise ParameterError(
            f"composite={composite!r}: expected a zennit Composite or one of "
            f"{', '.join(LRP_COMPOSITES)}"
        )
    return composite
