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

Speed: :class:`SharedModifiedForwards` lets the rules reuse their modified forward passes across
classes. It relies on zennit internals, so it checks its assumptions when it starts and on its
first use of each kind of layer, and falls back to zennit's own backward where they fail.
"""

from __future__ import annotations

from collections.abc import Sequence

import importlib.metadata
import warnings

import torch
from torch import nn
from zennit.core import BasicHook, Composite, ParamMod

from chexlib import methods
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.errors import ParameterError
from chexlib.explain.composites import LRP_COMPOSITES, make_composite
from chexlib.explain.inputs import (
    check_batch_size,
    check_batchnorm,
    check_images,
    class_indices,
    device_dtype,
    explainable,
    explainable_copy,
    is_explainable,
    num_outputs,
)

#: The zennit versions the shared-forward path is tested with (pyproject.toml bounds zennit to
#: them); with another version :func:`lrp` uses zennit's own backward.
TESTED_ZENNIT = ((0, 5, 1), (0, 6, 0))  # >= first, < second

__all__ = ["SharedModifiedForwards", "class_indices", "explainable_copy", "is_explainable", "lrp",
           "resolve_batchnorm", "zennit_is_tested"]

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
    indices = class_indices(classes, num_outputs(net))
    step = check_batch_size(batch_size, len(images))
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
    and the cheap element-wise input modifications. Other layers (pools, BatchNorms) keep
    zennit's own backward.

    The guard: this rests on zennit internals (``hook_refs``, ``stored_tensors['input']``, the
    rule's modifier lists, ``gradient_mapper`` and ``reducer``, a per-instance ``backward``
    that zennit's backward wrapper calls). It is used only

    - with a zennit version in :data:`TESTED_ZENNIT` (otherwise nothing is patched, with a
      warning once);
    - for a ``BasicHook`` that has those attributes, whose output modifiers are the identity
      (probed on a tensor) and whose layer is an ``nn.Linear`` or a zero-padded ``nn.Conv2d``
      (the input gradient then depends only on ``.weight``);
    - and, the first time a kind of rule and layer is seen in a process, only if its result
      equals zennit's own backward on that call (to 1e-5 of the relevance's largest value);
      otherwise that kind keeps zennit's backward for the rest of the process.

    Parameters
    ----------
    composite : zennit Composite
        Already registered (inside ``composite.context(model)``).

    Attributes
    ----------
    patched : int
        How many hooks take the fast path.
    """

    def __init__(self, composite: Composite) -> None:
        self.caches: list[dict] = []
        self.patched = 0
        if not zennit_is_tested():
            return
        for hook in list(getattr(composite, "hook_refs", ())):
            if isinstance(hook, BasicHook) and _hook_is_supported(hook):
                cache: dict = {}
                self.caches.append(cache)
                # An instance attribute: zennit's backward wrapper calls hook.backward(...).
                hook.backward = self._backward(hook, cache)
                self.patched += 1

    def clear(self) -> None:
        """Drop the kept outputs (call after the last class of a batch)."""
        for cache in self.caches:
            cache.clear()

    @staticmethod
    def _backward(hook: BasicHook, cache: dict):
        def backward(module, grad_input, grad_output):
            kind = _kind(hook, module)
            if not _has_direct_input_gradient(module) or _VERIFIED.get(kind) is False:
                return type(hook).backward(hook, module, grad_input, grad_output)
            fast = _shared_backward(hook, module, cache, grad_input, grad_output)
            if kind not in _VERIFIED:
                reference = type(hook).backward(hook, module, grad_input, grad_output)
                _VERIFIED[kind] = _same(fast, reference)
                return fast if _VERIFIED[kind] else reference
            return fast

        return backward


# (rule class, layer class, layer geometry) -> whether the fast path matched zennit's backward
# the first time it was used in this process.
_VERIFIED: dict[tuple, bool] = {}
_WARNED: list[bool] = []


def zennit_is_tested() -> bool:
    """Whether the installed zennit is in :data:`TESTED_ZENNIT` (warns once if not)."""
    try:
        version = tuple(int(part) for part in importlib.metadata.version("zennit").split(".")[:3])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = None
    low, high = TESTED_ZENNIT
    tested = version is not None and low <= version < high
    if not tested and not _WARNED:
        _WARNED.append(True)
        warnings.warn(f"zennit {version}: the shared-forward LRP path is tested with zennit "
                      f">= {low}, < {high}; using zennit's own backward (slower, same maps)",
                      stacklevel=3)
    return tested


def _hook_is_supported(hook: BasicHook) -> bool:
    needed = ("stored_tensors", "input_modifiers", "param_modifiers", "output_modifiers",
              "gradient_mapper", "reducer")
    if not all(hasattr(hook, name) for name in needed):
        return False
    probe = torch.linspace(-2.0, 2.0, 7)
    try:
        return all(torch.equal(out_mod(probe), probe) for out_mod in hook.output_modifiers)
    except Exception:  # noqa: BLE001 - a modifier we cannot probe is not the identity we need
        return False


def _kind(hook: BasicHook, module: nn.Module) -> tuple:
    geometry = tuple(getattr(module, name, None)
                     for name in ("kernel_size", "stride", "padding", "dilation", "groups"))
    return type(hook).__qualname__, type(module).__qualname__, geometry


def _same(fast: tuple, reference: tuple) -> bool:
    pairs = [(a, b) for a, b in zip(fast, reference) if a is not None or b is not None]
    if len(fast) != len(reference) or any(a is None or b is None for a, b in pairs):
        return False
    scale = max((float(b.abs().max()) for _, b in pairs), default=0.0)
    return all(float((a - b).abs().max()) <= 1e-5 * scale + 1e-12 for a, b in pairs)


def _shared_backward(hook: BasicHook, module: nn.Module, cache: dict, grad_input, grad_output):
    """zennit's rule with the modified outputs and weights computed once per forward pass.

    Two exact shortcuts: a variant whose upstream gradient is all zero (gamma's fifth) has a zero
    input gradient, and a variant whose modified input is all zero (the negative part of a ReLU
    output, in z+, gamma and alpha-beta) contributes ``input * gradient = 0`` to the reducer: its
    transposed convolution is skipped (the first-use check against zennit covers both).
    """
    stored = hook.stored_tensors["input"][0]
    original = stored.detach()
    if cache.get("key") is not stored:  # a new forward pass: recompute once
        cache.clear()
        cache["key"] = stored
        cache["outputs"], cache["weights"] = _modified_outputs(hook, module, original)
        cache["live"] = [bool(in_mod(original).any()) for in_mod in hook.input_modifiers]
    grad_outputs = hook.gradient_mapper(grad_output[0], cache["outputs"])
    if isinstance(grad_outputs, torch.Tensor):  # single-output rules (flat) return one
        grad_outputs = [grad_outputs]
    inputs = [in_mod(original) for in_mod in hook.input_modifiers]
    gradients = [
        _input_gradient(module, weight, grad, original.shape) if live and bool(grad.any())
        else torch.zeros_like(original)
        for weight, grad, live in zip(cache["weights"], grad_outputs, cache["live"])
    ]
    relevance = hook.reducer(inputs, gradients)
    return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)


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
