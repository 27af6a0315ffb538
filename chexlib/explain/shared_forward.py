"""Shared modified forward passes: LRP for many classes at the cost of little more than one.

A zennit rule (``BasicHook``) recomputes, in every backward pass, its layer's forward with
modified inputs and weights (z+: the positive parts; gamma: four variants) and differentiates
it. None of that depends on the class explained. :class:`SharedModifiedForwards` keeps it per
forward pass, so that :func:`chexlib.explain.lrp` pays per class only what does: one
multiplication of the upstream relevance and one transposed convolution per group of variants.

What is kept, per rule and forward pass (:func:`_plan`):

- the modified outputs and weights, the modified inputs, and, where the rule's gradient mapper is
  ``out_grad * factor`` element-wise (probed, :class:`_RuleShape`), its factors;
- which variants can contribute: none whose modified input is all zero (the negative part of a
  ReLU output) or whose factor is all zero (gamma's fifth), or that the reducer ignores;
- variants that share their input are stacked into one transposed convolution (their weights
  concatenated along the output channels: the same arithmetic, fewer and larger calls);
- gamma on an input of both signs has a crossed structure (:func:`_crossed_pairs`) that needs two
  transposed convolutions instead of four.

All of it is found on the tensors and probed on the rule's functions, never assumed from a
rule's class, and the result is checked against zennit's own backward the first time each kind
of rule and layer is used in a process.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import torch
from torch import nn
from zennit.core import BasicHook, Composite

from chexlib.explain.kept_forward import keep_output, modified_outputs, modules_of

#: The zennit versions the shared-forward path is tested with (pyproject.toml bounds zennit to
#: them); with another version :func:`chexlib.explain.lrp` uses zennit's own backward.
TESTED_ZENNIT = ((0, 5, 1), (0, 6, 0))  # >= first, < second

__all__ = ["SharedModifiedForwards", "TESTED_ZENNIT", "zennit_is_tested"]


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
    - and, the first time a kind of rule and layer is seen in a process with a given plan
      structure (crossed, grouped, or zennit's reducer), only if its result equals zennit's own
      backward on that call (to 1e-5 of the relevance's largest value); otherwise that kind and
      structure keep zennit's backward for the rest of the process.

    Parameters
    ----------
    composite : zennit Composite
        Already registered (inside ``composite.context(model)``).
    model : nn.Module, optional
        The registered model. Given, each patched layer's forward output is kept too (a forward
        hook, removed by :meth:`remove` or on leaving a ``with`` block), so that a variant that
        is the layer itself (the epsilon rule's, gamma's fifth) is not computed a second time.

    Attributes
    ----------
    patched : int
        How many hooks take the fast path.
    """

    def __init__(self, composite: Composite, model: nn.Module | None = None) -> None:
        self.caches: list[dict] = []
        self.handles: list = []
        self.patched = 0
        if not zennit_is_tested():
            return
        hooks = [hook for hook in list(getattr(composite, "hook_refs", ()))
                 if isinstance(hook, BasicHook) and _hook_is_supported(hook)]
        modules = modules_of(hooks, model) if model is not None else {}
        for hook in hooks:
            cache: dict = {}
            seen: dict = {}
            self.caches += [cache, seen]
            if id(hook) in modules:
                self.handles.append(modules[id(hook)].register_forward_hook(keep_output(seen)))
            # An instance attribute: zennit's backward wrapper calls hook.backward(...).
            hook.backward = self._backward(hook, cache, _RuleShape.probe(hook), seen)
            self.patched += 1

    def clear(self) -> None:
        """Drop the kept outputs (call after the last class of a batch)."""
        for cache in self.caches:
            cache.clear()

    def remove(self) -> None:
        """Remove the forward hooks that keep the layers' outputs, and drop what is kept."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.clear()

    def __enter__(self) -> SharedModifiedForwards:
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    @staticmethod
    def _backward(hook: BasicHook, cache: dict, shape: _RuleShape, seen: dict):
        def backward(module, grad_input, grad_output):
            if not _has_direct_input_gradient(module):
                return type(hook).backward(hook, module, grad_input, grad_output)
            fast = _shared_backward(hook, module, cache, shape, grad_input, grad_output, seen)
            # The plan's structure depends on the data (gamma on a signed or a ReLU input), so
            # each structure of each kind of rule and layer is verified on its own first use.
            kind = (*_kind(hook, module), _structure(cache))
            if _VERIFIED.get(kind) is False:
                return type(hook).backward(hook, module, grad_input, grad_output)
            if kind not in _VERIFIED:
                reference = type(hook).backward(hook, module, grad_input, grad_output)
                _VERIFIED[kind] = _same(fast, reference)
                return fast if _VERIFIED[kind] else reference
            return fast

        return backward


# (rule class, layer class, layer geometry, plan structure) -> whether the fast path matched
# zennit's backward the first time it was used in this process.
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


class _RuleShape:
    """What a rule's gradient mapper and reducer are, probed once on small random tensors.

    Attributes
    ----------
    linear : bool
        The mapper is ``out_grad * factor_i(outputs)``, element-wise, for every variant (z+,
        epsilon, gamma, alpha-beta, z^B: ``mask / stabilized denominator``), so the factors are
        class-independent and computed once per forward pass.
    used : list of bool or None
        Which variants the reducer adds as ``input_i * gradient_i`` (zennit's default and every
        built-in rule's; gamma leaves out its fifth). None where the reducer is something else:
        it is then called per class as zennit calls it, with every variant.
    """

    def __init__(self, linear: bool, used: list[bool] | None) -> None:
        self.linear, self.used = linear, used

    @classmethod
    def probe(cls, hook: BasicHook) -> "_RuleShape":
        gen = torch.Generator().manual_seed(0)
        count = len(hook.input_modifiers)
        outputs = [torch.randn(2, 5, generator=gen) for _ in range(count)]
        grad = torch.randn(2, 5, generator=gen)
        try:
            factors = _as_list(hook.gradient_mapper(torch.ones_like(grad), outputs))
            direct = _as_list(hook.gradient_mapper(grad, outputs))
            linear = len(factors) == len(direct) == count and all(
                torch.allclose(grad * f, d, rtol=1e-5, atol=1e-7) for f, d in zip(factors, direct))
        except Exception:  # noqa: BLE001 - a mapper we cannot probe is not known to be linear
            linear = False
        inputs = [torch.randn(2, 5, generator=gen) for _ in range(count)]
        grads = [torch.randn(2, 5, generator=gen) for _ in range(count)]
        try:
            used = [_reduced_term(hook, inputs, grads, i) for i in range(count)]
            expected = sum(a * g for a, g, use in zip(inputs, grads, used) if use)
            if None in used or not torch.allclose(torch.as_tensor(hook.reducer(inputs, grads)),
                                                  torch.as_tensor(expected), rtol=1e-5, atol=1e-7):
                used = None
        except Exception:  # noqa: BLE001 - likewise for the reducer
            used = None
        return cls(linear, used)


def _reduced_term(hook: BasicHook, inputs: list, grads: list, index: int) -> bool | None:
    """Whether the reducer adds ``inputs[index] * grads[index]`` (True), ignores it (False), or
    does something else with it (None); probed with every other gradient zero."""
    alone = [g if i == index else torch.zeros_like(g) for i, g in enumerate(grads)]
    reduced = torch.as_tensor(hook.reducer(inputs, alone))
    if torch.allclose(reduced, inputs[index] * grads[index], rtol=1e-5, atol=1e-7):
        return True
    return False if torch.count_nonzero(reduced) == 0 else None


def _as_list(grads) -> list:
    # Single-output rules (flat, epsilon) may return one tensor instead of a list.
    return [grads] if isinstance(grads, torch.Tensor) else list(grads)


def _shared_backward(hook: BasicHook, module: nn.Module, cache: dict, shape: _RuleShape,
                     grad_input, grad_output, seen: dict | None = None):
    """zennit's rule, with everything that does not depend on the class kept per forward pass."""
    stored = hook.stored_tensors["input"][0]
    original = stored.detach()
    if cache.get("key") is not stored:  # a new forward pass: plan once
        cache.clear()
        output = seen.get("output") if seen and seen.get("input") is stored else None
        cache.update(_plan(hook, module, original, shape, output), key=stored)
    grad = grad_output[0]
    if "crossed" in cache:
        relevance = _crossed_backward(module, cache["crossed"], grad, original)
    elif "groups" in cache:
        relevance = _grouped_backward(hook, module, cache, shape, grad, original)
    else:  # a reducer of another form: zennit's call, every variant
        grads = _grad_outputs(hook, cache, shape, grad, range(len(cache["weights"])))
        relevance = hook.reducer(cache["inputs"], [
            _input_gradient(module, w, g, original.shape) if alive and bool(g.any())
            else torch.zeros_like(original)
            for w, g, alive in zip(cache["weights"], grads, cache["live"])])
    return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)


def _structure(cache: dict) -> str:
    return "crossed" if "crossed" in cache else "grouped" if "groups" in cache else "reducer"


def _plan(hook: BasicHook, module: nn.Module, original: torch.Tensor, shape: _RuleShape,
          output: torch.Tensor | None = None) -> dict:
    """The class-independent part of a rule on one forward pass (the module docstring).

    Only what the per-class step needs is kept (memory: the modified outputs are dropped where
    the factors replace them, and a modified input equal to the layer's input is not copied).
    """
    inputs = [_same_or(in_mod(original), original) for in_mod in hook.input_modifiers]
    known: dict[int, bool] = {}  # variants often share their input tensor: test it once
    for x in inputs:
        if id(x) not in known:
            known[id(x)] = bool(x.any())
    nonzero = [known[id(x)] for x in inputs]
    outputs, weights = modified_outputs(hook, module, inputs, nonzero, original, output)
    used = shape.used or [True] * len(inputs)
    live = [use and alive for use, alive in zip(used, nonzero)]
    factors = None
    if shape.linear:
        factors = _as_list(hook.gradient_mapper(torch.ones_like(outputs[0]), outputs))
        live = [alive and bool(f.any()) for alive, f in zip(live, factors)]
    if shape.used is None:
        return {"outputs": outputs, "weights": weights, "inputs": inputs, "live": live,
                "factors": factors}
    crossed = _crossed_pairs(inputs, weights, factors, live, original) if factors else None
    if crossed is not None:
        return {"crossed": crossed}
    plan = {"groups": _groups(module, inputs, weights, live)}
    if factors is None:
        plan["outputs"] = outputs  # the mapper runs per class
    else:
        plan["factors"] = {i: f for i, (f, alive) in enumerate(zip(factors, live)) if alive}
    return plan


def _same_or(tensor: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    # A clamp of a ReLU output equals it: keep the layer's input instead of a copy.
    return original if tensor is original or torch.equal(tensor, original) else tensor


def _groups(module: nn.Module, inputs: list, weights: list, live: list
            ) -> list[tuple[torch.Tensor, list[int], torch.Tensor]]:
    """Live variants grouped by their (equal) modified input: (input, variants, stacked weight)."""
    groups: list[tuple[torch.Tensor, list[int]]] = []
    for i in (i for i, alive in enumerate(live) if alive):
        x = inputs[i]
        match = next((g for g in groups if g[0] is x or torch.equal(g[0], x)), None)
        if match is None:
            groups.append((x, [i]))
        else:
            match[1].append(i)
    stackable = isinstance(module, nn.Linear) or module.groups == 1
    result = []
    for x, variants in groups:
        if not stackable and len(variants) > 1:  # grouped convolutions: one call per variant
            result.extend((x, [i], weights[i]) for i in variants)
        else:
            result.append((x, variants, torch.cat([weights[i] for i in variants])))
    return result


def _grad_outputs(hook, cache: dict, shape: _RuleShape, grad: torch.Tensor, variants) -> list:
    if shape.linear:
        return [grad * cache["factors"][i] for i in variants]
    mapped = _as_list(hook.gradient_mapper(grad, cache["outputs"]))
    return [mapped[i] for i in variants]


def _grouped_backward(hook, module, cache: dict, shape: _RuleShape, grad, original):
    relevance = None
    for x, variants, weight in cache["groups"]:
        grads = _grad_outputs(hook, cache, shape, grad, variants)
        stacked = grads[0] if len(grads) == 1 else torch.cat(grads, dim=1)
        term = x * _input_gradient(module, weight, stacked, original.shape)
        relevance = term if relevance is None else relevance + term
    return torch.zeros_like(original) if relevance is None else relevance


def _crossed_pairs(inputs, weights, factors, live, original) -> dict | None:
    """Detect the gamma rule's crossed structure in the kept tensors; None where it is absent.

    Four live variants ``x_a * A^T(g F) + x_b * B^T(g F) + x_a * B^T(g G) + x_b * A^T(g G)``
    (gamma on an input of both signs: ``x_a, x_b`` its positive and negative parts,
    ``A = W + gamma W+``, ``B = W + gamma W-``, ``F, G`` the factors of positive and negative
    outputs) equal ``(x_a + x_b) * S^T u + (x_a - x_b) * D^T v`` with
    ``S, D = (A + B) / 2, (A - B) / 2`` and ``u, v = g (F + G), g (F - G)``: two transposed
    convolutions instead of four. Checked on the tensors themselves (which input, weight and
    factor each variant uses), not on the rule's class. ``x_a + x_b`` and ``x_a - x_b`` are
    the layer's input and its absolute value where they equal them (not kept, recomputed).
    """
    variants = [i for i, alive in enumerate(live) if alive]
    if len(variants) != 4:
        return None
    i0, i1, i2, i3 = variants
    same = torch.equal
    crossed = (same(inputs[i0], inputs[i2]) and same(inputs[i1], inputs[i3])
               and same(weights[i0], weights[i3]) and same(weights[i1], weights[i2])
               and same(factors[i0], factors[i1]) and same(factors[i2], factors[i3]))
    if not crossed:
        return None
    a, b, f, g = weights[i0], weights[i1], factors[i0], factors[i2]
    x_sum, x_difference = inputs[i0] + inputs[i1], inputs[i0] - inputs[i1]
    return {"sum": (a + b) / 2, "difference": (a - b) / 2, "f_plus_g": f + g,
            "f_minus_g": f - g, "x_sum": None if same(x_sum, original) else x_sum,
            "x_difference": None if same(x_difference, original.abs()) else x_difference}


def _crossed_backward(module, crossed: dict, grad, original):
    common = _input_gradient(module, crossed["sum"], grad * crossed["f_plus_g"], original.shape)
    split = _input_gradient(module, crossed["difference"], grad * crossed["f_minus_g"],
                            original.shape)
    x_sum = original if crossed["x_sum"] is None else crossed["x_sum"]
    x_difference = original.abs() if crossed["x_difference"] is None else crossed["x_difference"]
    return torch.addcmul(x_sum * common, x_difference, split)


def _has_direct_input_gradient(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _input_gradient(module, weight, grad, input_shape):
    """Gradient of the (linear) layer's output w.r.t. its input, for upstream ``grad``."""
    if isinstance(module, nn.Linear):
        return grad @ weight
    return torch.nn.grad.conv2d_input(
        input_shape, weight, grad, module.stride, module.padding, module.dilation, module.groups
    )


