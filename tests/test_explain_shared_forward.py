"""The shared-forward LRP path (chexlib.explain.shared_forward) on layers and rules of every shape
it distinguishes, against zennit's own backward (one attributor call per class).

The DenseNet-121 cases are in test_explain_lrp.py; here a small network puts each structure the
fast path detects in one place: gamma on an input of both signs (the crossed form), gamma on a
ReLU output (variants stacked into one transposed convolution), a grouped convolution (variants
not stacked), a rule whose gradient mapper is not linear and a rule whose reducer is not a sum of
products (both kept as zennit calls them).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.core import BasicHook, Composite, Stabilizer
from zennit.rules import Epsilon, Gamma, ZPlus

shared_module = importlib.import_module("chexlib.explain.shared_forward")
CLASSES = 4


class _SquaredMapper(BasicHook):
    """Epsilon-like, but relevance ``g |g| / z``: not linear in the upstream gradient."""

    def __init__(self):
        stabilize = Stabilizer.ensure(1e-6)
        super().__init__(gradient_mapper=lambda g, outs: [g * g.abs() / stabilize(outs[0])],
                         reducer=lambda inputs, grads: inputs[0] * grads[0])


class _HalfReducer(BasicHook):
    """Epsilon with half of ``input * gradient``: a reducer that is not a sum of products."""

    def __init__(self):
        stabilize = Stabilizer.ensure(1e-6)
        super().__init__(gradient_mapper=lambda g, outs: [g / stabilize(outs[0])],
                         reducer=lambda inputs, grads: 0.5 * inputs[0] * grads[0])


RULES = {
    "signed": lambda: Gamma(gamma=0.25),      # input of both signs: crossed
    "rectified": lambda: Gamma(gamma=0.25),   # ReLU output: x- dead, two variants stacked
    "grouped": lambda: Gamma(gamma=0.25),     # groups=2: not stacked
    "zplus": lambda: ZPlus(),
    "squared": _SquaredMapper,
    "head": _HalfReducer,
    "first": lambda: Epsilon(epsilon=1e-6),
}


def _network() -> nn.Module:
    torch.manual_seed(0)
    layers = nn.ModuleDict({
        "first": nn.Conv2d(3, 8, 3, padding=1),
        "signed": nn.Conv2d(8, 8, 1),
        "rectified": nn.Conv2d(8, 8, 3, padding=1),
        "grouped": nn.Conv2d(8, 8, 3, padding=1, groups=2),
        "zplus": nn.Conv2d(8, 8, 3, padding=1),
        "squared": nn.Conv2d(8, 8, 1),
        "head": nn.Linear(8 * 6 * 6, CLASSES),
    })

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            f = self.layers
            x = f["signed"](f["first"](x))           # no ReLU between: a signed input
            x = f["rectified"](torch.relu(x))
            x = f["grouped"](torch.relu(x))
            x = f["zplus"](torch.relu(x))
            x = f["squared"](torch.relu(x))
            return f["head"](x.flatten(1))

    return Net().eval()


def _composite() -> Composite:
    def module_map(ctx, name, module):
        key = name.rsplit(".", 1)[-1]
        return RULES[key]() if key in RULES else None

    return Composite(module_map=module_map)


def _shared_maps(net, images, keep_outputs=False):
    composite = _composite()
    with composite.context(net) as hooked:
        shared = shared_module.SharedModifiedForwards(composite, hooked if keep_outputs else None)
        x = images.clone().requires_grad_(True)
        logits = hooked(x)
        maps = []
        for k in range(CLASSES):
            seed = torch.zeros_like(logits)
            seed[:, k] = logits[:, k].detach()  # relevance = the logit, as zennit seeds it below
            (grad,) = torch.autograd.grad(logits, x, seed, retain_graph=k < CLASSES - 1)
            maps.append(grad.sum(1))
        shared.remove()
    return torch.stack(maps, 1), shared


def _zennit_maps(net, images):
    maps = []
    for k in range(CLASSES):
        with Gradient(net, _composite()) as attributor:
            _, relevance = attributor(
                images.clone(), lambda out, k=k: out * nn.functional.one_hot(torch.tensor(k),
                                                                             CLASSES))
        maps.append(relevance.sum(1))
    return torch.stack(maps, 1)


@pytest.fixture
def fresh_verification(monkeypatch):
    monkeypatch.setattr(shared_module, "_VERIFIED", {})
    return shared_module._VERIFIED


@pytest.fixture
def plans(monkeypatch):
    """Every plan made, by layer name (the fast path's choices, as a spy)."""
    made: dict[int, dict] = {}
    real = shared_module._plan

    def spy(hook, module, original, shape, *kept):
        plan = real(hook, module, original, shape, *kept)
        made[id(module)] = plan
        return plan

    monkeypatch.setattr(shared_module, "_plan", spy)
    return made


def test_probe_reads_the_rules_mapper_and_reducer():
    gamma = shared_module._RuleShape.probe(Gamma(gamma=0.25))
    assert gamma.linear and gamma.used == [True, True, True, True, False]  # the 5th is ignored
    zplus = shared_module._RuleShape.probe(ZPlus())
    assert zplus.linear and zplus.used == [True, True]
    squared = shared_module._RuleShape.probe(_SquaredMapper())
    assert not squared.linear and squared.used == [True]
    half = shared_module._RuleShape.probe(_HalfReducer())
    assert half.linear and half.used is None


def test_every_structure_matches_zennit_per_class(fresh_verification, plans):
    net = _network()
    images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    fast, shared = _shared_maps(net, images)
    assert shared.patched == len(RULES)
    # Classes after the first run on the fast path alone (the check is on first use only).
    assert fresh_verification and all(fresh_verification.values())
    reference = _zennit_maps(net, images)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5 * float(reference.abs().max()))

    by_name = {name: plans[id(module)] for name, module in net.layers.items()}
    assert "crossed" in by_name["signed"]                              # 2 transposed convs, not 4
    crossed = by_name["signed"]["crossed"]
    assert crossed["x_sum"] is None and crossed["x_difference"] is None  # x and |x|: no copies
    assert [len(v) for _, v, _ in by_name["rectified"]["groups"]] == [2]  # one stacked call
    assert by_name["rectified"]["groups"][0][0] is not None and "crossed" not in by_name["rectified"]
    assert [len(v) for _, v, _ in by_name["grouped"]["groups"]] == [1, 1]  # groups=2: not stacked
    assert "groups" in by_name["squared"] and "factors" not in by_name["squared"]
    assert "groups" not in by_name["head"]                             # zennit's reducer per class


@pytest.mark.parametrize("keep_outputs", [False, True])
def test_skipped_forward_passes_give_zennits_maps(keep_outputs, fresh_verification, monkeypatch):
    # Convolutions run per layer: the network's own forward, plus the plan's modified forwards.
    # A variant on an all-zero input (gamma's x- on a ReLU output) is its bias, not a
    # convolution; with the model given, a variant that is the layer itself (epsilon; gamma's
    # fifth) takes the kept forward output.
    net = _network()
    images = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    runs: dict[int, int] = {}
    real = nn.Conv2d._conv_forward

    def counted(self, x, weight, bias):
        runs[id(self)] = runs.get(id(self), 0) + 1
        return real(self, x, weight, bias)

    _shared_maps(net, images, keep_outputs=keep_outputs)  # first use: checked against zennit
    assert fresh_verification and all(fresh_verification.values())
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", counted)
    fast, shared = _shared_maps(net, images, keep_outputs=keep_outputs)
    monkeypatch.undo()
    reference = _zennit_maps(net, images)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-5 * float(reference.abs().max()))
    assert not shared.handles  # remove() took the output hooks off
    per_layer = {name: runs.get(id(module), 0) for name, module in net.layers.items()
                 if isinstance(module, nn.Conv2d)}
    kept = int(keep_outputs)
    assert per_layer["rectified"] == 1 + 3 - kept  # gamma, x >= 0: x+ twice, the layer once
    assert per_layer["grouped"] == 1 + 3 - kept
    assert per_layer["signed"] == 1 + 5 - kept     # gamma on a signed input: every variant
    assert per_layer["zplus"] == 1 + 1             # z+ on a ReLU output: x- is zero
    assert per_layer["first"] == 1 + 1 - kept      # epsilon: the layer itself


def test_each_plan_structure_is_verified_on_its_own(fresh_verification):
    # Two gamma 1x1 convolutions, the same kind of rule and layer: one on a signed input (the
    # crossed plan), one on a ReLU output (grouped). Each structure gets its own first-use check.
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1),
                        nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).eval()
    gamma_layers = {"1", "3"}

    def module_map(ctx, name, module):
        if name in gamma_layers:
            return Gamma(gamma=0.25)
        return Epsilon(epsilon=1e-6) if isinstance(module, (nn.Conv2d, nn.Linear)) else None

    composite = Composite(module_map=module_map)
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    with composite.context(net) as hooked:
        shared = shared_module.SharedModifiedForwards(composite)
        logits = hooked(x)
        for k in range(3):
            torch.autograd.grad(logits, x, torch.eye(3)[k].expand_as(logits), retain_graph=k < 2)
        shared.clear()
    structures = {key[-1] for key in fresh_verification if key[0] == "Gamma"}
    assert structures == {"crossed", "grouped"} and all(fresh_verification.values())
