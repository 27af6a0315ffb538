"""Conservation of relevance: how much of each logit an LRP map accounts for.

LRP is seeded with a class's logit ``z``; a conservative composite hands all of it down to the
pixels except what biases absorb. In the chexlib DenseNet-121 the only biases are the
classifier's and the BatchNorm shifts (the convolutions have none). So, per image and class::

    z  =  sum(map)  +  classifier-bias share  +  BatchNorm-shift share  +  epsilon share

- the classifier-bias share is ``b`` (to within the classifier's epsilon);
- under the epsilon rule the BatchNorm shifts are biases like any other (their LRP-0 share is
  computed below); under the composites whose BatchNorms take zennit's ``Pass`` rule (z+,
  alpha-beta, gamma, flat, z^B below them) they absorb only the relevance they put on features
  that are exactly zero (:mod:`chexlib.explain.composites`): nothing on random inputs, a few
  percent on real radiographs with uniform background;
- a large epsilon (``epsilon``, ``montavon2019``'s middle blocks) absorbs on purpose.

:func:`batchnorm_shift_share` computes the BatchNorm-shift share of LRP-0 by plain autograd
(LRP-0 is gradient x input, and a ReLU network is ``z = x . dz/dx + sum(shift . dz/dshift)``), so
the table below can tell the shifts' share from the epsilons'.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from chexlib.explain.inputs import class_indices, explainable_copy, is_explainable
from chexlib.explain.lrp import lrp
from chexlib.observations import OBSERVATIONS


def batchnorm_shift_share(
    model: nn.Module, images: torch.Tensor, classes: Sequence[str | int] | None = None
) -> torch.Tensor:
    """What the BatchNorm shifts absorb of each logit under LRP-0 (gradient x input).

    A BatchNorm in eval mode computes ``scale * x + shift`` per channel, with
    ``shift = bias - weight * running_mean / sqrt(running_var + eps)``. Its share of logit ``k``
    is ``sum(shift * dz_k / d output)`` over channels and positions.

    Parameters
    ----------
    model : nn.Module
        A chexlib DenseNet-121 (its explainable copy is used; the model is untouched).
    images : Tensor [B, 3, H, W]
    classes : as in :func:`chexlib.explain.lrp`

    Returns
    -------
    Tensor [B, K]
    """
    net = model if is_explainable(model) else explainable_copy(model)
    indices = class_indices(classes, getattr(net, "num_classes", len(OBSERVATIONS)))
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(module: nn.BatchNorm2d, _inputs, output: torch.Tensor) -> None:
        std = torch.sqrt(module.running_var + module.eps)
        outputs.append((output, module.bias - module.weight * module.running_mean / std))

    handles = [m.register_forward_hook(keep) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # makes every activation need grad
            logits = net(x)
            shares = []
            for n, k in enumerate(indices):
                grads = torch.autograd.grad(
                    logits[:, k].sum(), [out for out, _ in outputs], retain_graph=n < len(indices) - 1
                )
                shares.append(
                    sum((g * shift[None, :, None, None]).sum(dim=(1, 2, 3))
                        for g, (_, shift) in zip(grads, outputs))
                )
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(shares, dim=1).detach()


def conservation_table(
    model: nn.Module,
    images: torch.Tensor,
    composites: Sequence[str],
    classes: Sequence[str | int] | None = None,
) -> pd.DataFrame:
    """Per composite, image and class: the logit, the map's sum and what was absorbed.

    Returns
    -------
    DataFrame
        Columns ``composite``, ``image`` (position in the batch), ``class``, ``logit``,
        ``relevance_sum``, ``classifier_bias`` (the classifier-bias share), ``batchnorm_shifts``
        (their share under LRP-0, the same for every composite: it applies to the composites
        whose BatchNorms take the epsilon rule), ``kept`` (``relevance_sum / (logit - bias)``)
        and ``residual`` (``logit - classifier_bias - relevance_sum``): zero for a conservative
        composite, the BatchNorm shifts' share for LRP-0, more with a large epsilon.
    """
    net = model if is_explainable(model) else explainable_copy(model)
    indices = class_indices(classes, getattr(net, "num_classes", len(OBSERVATIONS)))
    names = [OBSERVATIONS[k] if k < len(OBSERVATIONS) else str(k) for k in indices]
    shifts = batchnorm_shift_share(net, images, indices)
    bias = net.classifier.bias.detach()[indices]
    rows = []
    for composite in composites:
        relevance, logits = lrp(net, images, indices, composite=composite, return_logits=True)
        sums, z = relevance.sum(dim=(2, 3)), logits[:, indices]
        for i in range(len(images)):
            for j, name in enumerate(names):
                target = float(z[i, j] - bias[j])
                rows.append({
                    "composite": composite, "image": i, "class": name, "logit": float(z[i, j]),
                    "relevance_sum": float(sums[i, j]), "classifier_bias": float(bias[j]),
                    "batchnorm_shifts": float(shifts[i, j]),
                    "kept": float(sums[i, j]) / target if target else float("nan"),
                    "residual": target - float(sums[i, j]),
                })
    return pd.DataFrame(rows)
