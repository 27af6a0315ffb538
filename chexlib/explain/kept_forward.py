"""The forward side of the shared-forward LRP path: what a rule's modified forward passes output.

:func:`modified_outputs` computes, for one layer and one batch, the outputs of a zennit rule's
variants, without running the convolutions whose result is known (:mod:`chexlib.explain.
shared_forward` uses it once per forward pass). :func:`modules_of` and :func:`keep_output` let the
layers' own forward outputs be kept for it.
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.core import BasicHook, ParamMod

__all__ = ["keep_output", "modified_outputs", "modules_of"]


def modules_of(hooks: list, model: nn.Module) -> dict[int, nn.Module]:
    """id(hook) -> the module it is registered on (whose forward hooks include its method)."""
    wanted = {id(hook) for hook in hooks}
    found = {}
    for module in model.modules():
        for function in module._forward_hooks.values():
            owner = getattr(function, "__self__", None)
            if id(owner) in wanted:
                found[id(owner)] = module
    return found


def keep_output(seen: dict):
    def keep(module, args, output):
        # Keyed by the input tensor zennit stores for the same call (the same object).
        if isinstance(output, torch.Tensor) and args:
            seen["input"], seen["output"] = args[0], output.detach()

    return keep


@torch.no_grad()
def modified_outputs(hook: BasicHook, module: nn.Module, inputs: list, nonzero: list,
                      original: torch.Tensor, output: torch.Tensor | None = None):
    """The layer's outputs on the rule's modified inputs and weights, and those weights.

    Two kinds of variant are not computed again: one whose modified input and parameters are
    the layer's own returns the layer's forward ``output`` where it was kept (the epsilon rule,
    gamma's fifth variant); one whose modified input is all zero (the negative part of a ReLU
    output: gamma's and alpha-beta's second and fourth) outputs its modified bias everywhere
    (zero padding). On DenseNet's ReLU inputs that runs gamma's convolution 2 times, not 5.
    """
    outputs, weights, biases = [], [], []
    own = (module.weight.detach(), _detached(module.bias))  # the context swaps the parameters
    modifiers = zip(inputs, nonzero, hook.param_modifiers, hook.output_modifiers)
    for x, alive, param_mod, out_mod in modifiers:
        with ParamMod.ensure(param_mod)(module) as modified:
            weight, bias = modified.weight.detach(), _detached(modified.bias)
            if output is not None and x is original and _same_parameters((weight, bias), own):
                outputs.append(out_mod(output))
            elif alive or not any(nonzero):
                outputs.append(out_mod(modified.forward(x)))
            else:
                outputs.append(None)
            weights.append(weight)
            biases.append(bias)
    shape = next(o.shape for o in outputs if o is not None)
    for i, (computed, bias, out_mod) in enumerate(zip(outputs, biases, hook.output_modifiers)):
        if computed is None:
            constant = torch.zeros(shape, dtype=inputs[i].dtype, device=inputs[i].device)
            if bias is not None:
                constant += bias.view(1, -1, *([1] * (len(shape) - 2)))
            outputs[i] = out_mod(constant)
    return outputs, weights


def _detached(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach()


def _same_parameters(modified: tuple, own: tuple) -> bool:
    (weight, bias), (own_weight, own_bias) = modified, own
    if (bias is None) != (own_bias is None):
        return False
    return torch.equal(weight, own_weight) and (bias is None or torch.equal(bias, own_bias))
