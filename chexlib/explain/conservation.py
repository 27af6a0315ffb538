"""Conservation of relevance: where each logit's relevance goes, pixels and biases counted.

LRP is seeded with a class's logit ``z``. On its way down, every layer with a bias hands part of
the relevance it receives to that bias instead of to its inputs; epsilon stabilisers absorb a
little more (a large epsilon a lot). So, per image and class::

    z  =  pixels  +  classifier  +  batchnorm  +  rest

measured by :func:`relevance_shares`, the method documented here: relevance flows back as the
"gradient" while a composite is registered, so the relevance a layer absorbs is the sum of the
relevance that reaches its output minus the sum that leaves through its input (tensor hooks on
both, per image). The absorbing layers are counted by kind:

``classifier``  the classifier's bias (in the canonized network, with ``norm5``'s merged shift)
``batchnorm``   the BatchNorm shifts: with ``batchnorm="fold"`` the biases of the folded
                convolutions (``conv0``, each dense layer's ``conv1``, the transitions'
                ``conv``) and the baselines of the thresholded ReLUs
                (:mod:`chexlib.explain.canonizers`); with ``"pass"`` the BatchNorm layers
                themselves (which absorb nothing under ``Pass``: their shifts' share goes to
                the pixels)
``rest``        ``z - pixels - classifier - batchnorm``: what the epsilon rules of layers
                without a bias absorb, and anything that leaks elsewhere (pools, concatenations
                and ReLUs are not counted, so a leak there shows up here)

For LRP-0 (``z``) the shares have an independent reference, Euler's theorem: the network is
piecewise linear and jointly homogeneous in its input, biases and thresholds, so
``z = x . dz/dx + sum(b . dz/db) + sum(theta . dz/dtheta)`` with every term a plain gradient;
:func:`lrp0_bias_shares` computes them by autograd (the tests compare the two).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn
from zennit.core import Composite

from chexlib.explain.canonizers import ThresholdedReLU
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.explain.composites import make_composite
from chexlib.explain.inputs import class_indices, explainable, num_outputs
from chexlib.explain.lrp import resolve_batchnorm
from chexlib.explain.shared_forward import SharedModifiedForwards
from chexlib.observations import OBSERVATIONS

#: The parts of a logit :func:`relevance_shares` reports, in order.
SHARES = ("pixels", "classifier", "batchnorm", "rest")


def _absorbers(net: nn.Module) -> dict[str, str]:
    """Module name -> ``"classifier"`` or ``"batchnorm"``, for every layer that can absorb."""
    kinds = {}
    for name, module in net.named_modules():
        has_bias = isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None
        if name == "classifier":
            kinds[name] = "classifier"
        elif has_bias or isinstance(module, (ThresholdedReLU, nn.BatchNorm2d)):
            kinds[name] = "batchnorm"
    return kinds


def relevance_shares(
    model: nn.Module,
    images: torch.Tensor,
    composite: str | Composite = DEFAULT_COMPOSITE,
    classes: Sequence[str | int] | None = None,
    *,
    batchnorm: str | None = None,
) -> dict[str, torch.Tensor]:
    """Where each class's relevance goes: logit, pixels, classifier, batchnorm and rest.

    Parameters
    ----------
    model, images, classes, composite, batchnorm
        As in :func:`chexlib.explain.lrp.lrp`.

    Returns
    -------
    dict str -> Tensor [B, K]
        ``"logit"`` and each of :data:`SHARES` (the module docstring); ``pixels`` is the sum of
        :func:`~chexlib.explain.lrp.lrp`'s map.
    """
    rules = make_composite(composite) if isinstance(composite, str) else composite
    net = explainable(model, resolve_batchnorm(composite, batchnorm))
    indices = class_indices(classes, num_outputs(net))
    kinds = _absorbers(net)
    flows: dict[tuple[str, str], torch.Tensor] = {}
    handles = []
    with rules.context(net) as hooked:
        shared = SharedModifiedForwards(rules) if len(indices) > 1 else None
        for name, module in hooked.named_modules():
            if name in kinds:
                # Prepended: sees the input before zennit's own pre-hook wraps it. Appended
                # (registered after zennit's): sees the output zennit's hook is attached to.
                handles.append(module.register_forward_pre_hook(
                    _track(flows, name, "in", lambda args: args[0]), prepend=True))
                handles.append(module.register_forward_hook(
                    _track(flows, name, "out", lambda args, out: out)))
        try:
            shares = _class_shares(hooked, images, indices, kinds, flows)
        finally:
            for handle in handles:
                handle.remove()
            if shared is not None:
                shared.clear()
    return shares


def _track(flows: dict, name: str, side: str, pick):
    def hook(module, *arguments):
        tensor = pick(*arguments)
        if isinstance(tensor, torch.Tensor) and tensor.requires_grad:
            def record(grad):
                flows[(name, side)] = grad.detach().flatten(1).sum(1)
            tensor.register_hook(record)

    return hook


def _class_shares(hooked, images, indices, kinds, flows) -> dict[str, torch.Tensor]:
    param = next(hooked.parameters())
    x = images.detach().to(param.device, param.dtype).requires_grad_(True)
    per_class = {key: [] for key in ("logit", *SHARES)}
    with torch.enable_grad():
        logits = hooked(x)
        for n, k in enumerate(indices):
            flows.clear()
            seed = torch.zeros_like(logits)
            seed[:, k] = logits[:, k].detach()
            (relevance,) = torch.autograd.grad(logits, x, grad_outputs=seed,
                                               retain_graph=n < len(indices) - 1)
            absorbed = {"classifier": torch.zeros(len(x), device=x.device, dtype=x.dtype),
                        "batchnorm": torch.zeros(len(x), device=x.device, dtype=x.dtype)}
            for name, kind in kinds.items():
                if (name, "out") in flows:
                    absorbed[kind] += flows[(name, "out")] - flows.get((name, "in"), 0.0)
            z = logits[:, k].detach()
            pixels = relevance.flatten(1).sum(1)
            per_class["logit"].append(z)
            per_class["pixels"].append(pixels)
            per_class["classifier"].append(absorbed["classifier"])
            per_class["batchnorm"].append(absorbed["batchnorm"])
            per_class["rest"].append(z - pixels - absorbed["classifier"] - absorbed["batchnorm"])
    return {key: torch.stack(values, 1).cpu() for key, values in per_class.items()}


def lrp0_bias_shares(
    model: nn.Module,
    images: torch.Tensor,
    classes: Sequence[str | int] | None = None,
    *,
    batchnorm: str = "fold",
) -> dict[str, torch.Tensor]:
    """The bias shares of LRP-0 by plain autograd (Euler's theorem, the module docstring).

    ``classifier``: ``sum(b . dz/db)`` of the classifier; ``batchnorm``: with ``"fold"`` the
    same for every other bias plus ``sum(theta . dz/dtheta)`` over the thresholded ReLUs'
    inactive positions, with ``"pass"`` ``sum(shift . dz/d output)`` over the BatchNorms
    (``shift = bias - weight * running_mean / sqrt(running_var + eps)``).

    Returns
    -------
    dict ``"classifier"``, ``"batchnorm"`` -> Tensor [B, K]
    """
    net = explainable(model, batchnorm)
    indices = class_indices(classes, num_outputs(net))
    kept: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (kind, output, constant term)

    def keep(kind, constant):
        def hook(module, args, output):
            kept.append((kind, output, constant(module, args[0], output)))
        return hook

    handles = []
    for name, module in net.named_modules():
        kind = "classifier" if name == "classifier" else "batchnorm"
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            handles.append(module.register_forward_hook(keep(kind, _bias_term)))
        elif isinstance(module, ThresholdedReLU):
            handles.append(module.register_forward_hook(keep(kind, _threshold_term)))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_hook(keep(kind, _shift_term)))
    try:
        with torch.enable_grad():
            param = next(net.parameters())
            x = images.detach().to(param.device, param.dtype).requires_grad_(True)
            logits = net(x)
            shares = {"classifier": [], "batchnorm": []}
            for n, k in enumerate(indices):
                grads = torch.autograd.grad(logits[:, k].sum(), [out for _, out, _ in kept],
                                            retain_graph=n < len(indices) - 1)
                for kind in shares:
                    shares[kind].append(sum(
                        ((g * term).flatten(1).sum(1) for g, (which, _, term) in zip(grads, kept)
                         if which == kind), torch.zeros(len(x), device=x.device, dtype=x.dtype)))
    finally:
        for handle in handles:
            handle.remove()
    return {kind: torch.stack(values, 1).detach().cpu() for kind, values in shares.items()}


def _channel_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view((1, -1) + (1,) * (like.ndim - 2))


def _bias_term(module, _input, output):
    return _channel_view(module.bias.detach(), output).expand_as(output)


def _threshold_term(module, input, output):
    threshold = _channel_view(module.threshold, output)
    active = _channel_view(module.direction, output) * (input - threshold) > 0
    return torch.where(active, torch.zeros_like(output), threshold.expand_as(output)).detach()


def _shift_term(module, _input, output):
    std = torch.sqrt(module.running_var + module.eps)
    shift = module.bias - module.weight * module.running_mean / std
    return _channel_view(shift.detach(), output).expand_as(output)


def conservation_table(
    model: nn.Module,
    images: torch.Tensor,
    composites: Sequence[str],
    classes: Sequence[str | int] | None = None,
) -> pd.DataFrame:
    """Per composite (registry name: ``-pass`` keeps the BatchNorms), image and class: where the
    logit's relevance goes.

    Returns
    -------
    DataFrame
        Columns ``composite``, ``treatment`` (of the BatchNorms: ``fold`` / ``pass``), ``image``
        (position in the batch), ``class``, ``logit``, then each of :data:`SHARES` as an amount
        and as a share of the logit (``pixels_share`` ... ``rest_share``; NaN for a zero logit).
    """
    indices = class_indices(classes, len(OBSERVATIONS))
    names = [OBSERVATIONS[k] for k in indices]
    rows = []
    for composite in composites:
        treatment = resolve_batchnorm(composite, None)
        shares = relevance_shares(model, images, composite, indices)
        for i in range(len(images)):
            for j, name in enumerate(names):
                z = float(shares["logit"][i, j])
                row = {"composite": composite, "treatment": treatment, "image": i,
                       "class": name, "logit": z}
                for key in SHARES:
                    row[key] = float(shares[key][i, j])
                    row[f"{key}_share"] = row[key] / z if z else float("nan")
                rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["SHARES", "conservation_table", "lrp0_bias_shares", "relevance_shares",
           "share_summary"]


def share_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per composite: the share of the logits each part takes, over every image and class.

    A share is the projection of the part on the logits, ``sum(part * z) / sum(z * z)`` over the
    table's rows: the least-squares ``c`` in ``part ~ c * z``, which (unlike a mean of
    ``part / z``) stays finite when some logits are near zero. The four shares add up to 1.

    Parameters
    ----------
    table : DataFrame
        From :func:`conservation_table`.

    Returns
    -------
    DataFrame
        Index ``composite`` (in the table's order), columns ``treatment``, ``n`` (rows), and
        each of :data:`SHARES`.
    """
    rows = []
    for composite, group in table.groupby("composite", sort=False):
        z = group["logit"].to_numpy()
        norm = float((z * z).sum())
        row = {"composite": composite, "treatment": group["treatment"].iloc[0], "n": len(group)}
        for key in SHARES:
            row[key] = float((group[key].to_numpy() * z).sum()) / norm if norm else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("composite")
