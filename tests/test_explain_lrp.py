"""chexlib.explain: LRP on DenseNet-121 checked against independent references.

References: the model's own logits (conservation: a map plus what the biases absorb sums to the
logit it was seeded with), plain autograd (LRP-0 through a ReLU network equals gradient x input
of the original model; Euler's theorem gives the biases' share), zennit's own ``Gradient``
attributor called once per class on the same (canonized) network, and a hand-computed pooling.
Never the code's own output.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn
from zennit.attribution import Gradient

import importlib
from chexlib.explain import LRP_COMPOSITES, explainable_copy, lrp, lrp_composites
from chexlib.explain.composites import SMALL_EPSILON, make_composite
from chexlib.explain.conservation import (
    conservation_table,
    lrp0_bias_shares,
    relevance_shares,
    share_summary,
)
from chexlib.methods import FOLDED_COMPOSITES, lrp_batchnorm, pass_variant
from chexlib.model import densenet121
from chexlib.observations import OBSERVATIONS
from support import random_batchnorm

lrp_module = importlib.import_module("chexlib.explain.lrp")  # the module, not the function
shared_module = importlib.import_module("chexlib.explain.shared_forward")

SIZE, BATCH = 64, 2
# Composites whose epsilon is large on purpose: they absorb relevance by design.
ABSORBING = ("epsilon", "montavon2019", "montavon2019_epsilon_pixels")
# Composites whose BatchNorms take zennit's Pass rule under batchnorm="pass": conservative
# whatever the BN shift (on inputs without exactly-zero features: see the dead-feature test).
PASS_BN = ("alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box")


def _base(name: str) -> str:
    return name.removesuffix("-pass")


def _negligible_epsilon(name: str):
    """The composite, with its epsilon made negligible where it is large on purpose."""
    return make_composite(name, epsilon=1e-9 if _base(name) in ABSORBING else None)
# A subset of classes where all 14 would only slow the test (1 = the logit closest to zero).
SOME = [0, 1, 7, 13]


def _model(shift: bool, classifier_bias: bool) -> nn.Module:
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none")
    # Random statistics and scales (10 % negative); shift=False: BN(0) = 0, so that the
    # network's only bias is the classifier's.
    random_batchnorm(model, torch.Generator().manual_seed(1), negative_share=0.1, shift=shift)
    with torch.no_grad():
        if classifier_bias:
            model.classifier.bias.copy_(torch.linspace(-0.5, 0.5, 14))
        else:
            model.classifier.bias.zero_()
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def shifted():
    """Random BN statistics and shifts, classifier bias zero (an explainable copy, BN kept)."""
    return explainable_copy(_model(shift=True, classifier_bias=False))


@pytest.fixture(scope="module")
def biased():
    """Random BN statistics, shifts and scales (10 % negative) and a classifier bias."""
    return _model(shift=True, classifier_bias=True)


@pytest.fixture(scope="module")
def unshifted():
    """Random BN statistics and scales, BN(0) = 0, classifier bias zero."""
    return explainable_copy(_model(shift=False, classifier_bias=False))


def _assert_sums(relevance, expected, atol=1e-5):
    sums = relevance.sum(dim=(2, 3))
    torch.testing.assert_close(sums, expected, rtol=1e-3, atol=atol)


# ------------------------------------------------------------------ the explainable copy


def test_explainable_copy_computes_the_models_logits_and_leaves_it_alone(images):
    model = _model(shift=True, classifier_bias=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = explainable_copy(model)
    assert model.training and not net.training
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 58 * 2 + 3 + 1  # relu0, 2 per dense layer, 3 transitions, head
    assert not any(m.inplace for m in relus)
    assert any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    with torch.no_grad():
        expected = model.eval()(images)
        got = net(images)
    assert (got - expected).abs().max().item() <= 1e-5
    lrp(model, images, classes=[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torchvision_densenet_is_refused():
    import torchvision

    with pytest.raises(ValueError, match="chexlib.model.DenseNet121"):
        explainable_copy(torchvision.models.densenet121(weights=None, num_classes=14))


# ------------------------------------------------------------------ conservation


@pytest.mark.parametrize("name", PASS_BN)
def test_pass_batchnorm_composites_conserve_with_random_batchnorm(name, shifted, images):
    # With BatchNorms kept, their shifts' share goes to the pixels: "conservation" by construction.
    relevance, logits = lrp(shifted, images, composite=pass_variant(name), return_logits=True)
    assert relevance.shape == (BATCH, 14, SIZE, SIZE)
    # epsilon_gamma_box's proportional max pool gives nothing to an all-zero window, where the
    # gradient gave a BatchNorm shift's share to one zero input (the dead-feature case below):
    # measured 3.6e-4 of logits up to 1.4 on this model.
    _assert_sums(relevance, logits, atol=1e-3 if name == "epsilon_gamma_box" else 1e-5)


@pytest.mark.parametrize("name", list(LRP_COMPOSITES))
def test_every_composite_conserves_without_batchnorm_shift(name, unshifted, images):
    # BN(0) = 0 and no classifier bias: folding makes no bias either. Large-epsilon composites
    # with their epsilon made negligible: the structure leaks nothing.
    relevance, logits = lrp(unshifted, images, SOME, composite=_negligible_epsilon(name),
                            batchnorm=lrp_batchnorm(name), return_logits=True)
    _assert_sums(relevance, logits[:, SOME])


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "alpha2_beta1"])
def test_batchnorm_shift_on_dead_features_absorbs_and_nothing_else_does(name, images):
    # 16 of the first dense layer's 32 new features are exactly zero everywhere. A positive
    # BatchNorm shift downstream lights them up, they receive relevance, and their own layer has
    # no positive contribution to pass it to: the shift's share stops there (documented in
    # chexlib.explain.composites). With BatchNorm(0) = 0 the same dead features lose nothing.
    kept = {}
    for shift in (True, False):
        model = _model(shift=shift, classifier_bias=False)
        with torch.no_grad():
            model.features.denseblock1.denselayer1.conv2.weight[:16].zero_()
        relevance, logits = lrp(model, images, [0, 5], composite=pass_variant(name),
                                return_logits=True)
        kept[shift] = relevance.sum(dim=(2, 3)) / logits[:, [0, 5]]
    assert (kept[False] - 1).abs().max() < 1e-4
    assert 1e-3 < (1 - kept[True]).abs().min() and (1 - kept[True]).abs().max() < 0.05


@pytest.mark.parametrize("name", ["z", "z-pass"])
def test_lrp0_equals_gradient_times_input_of_the_original_model(name, biased, images):
    # Canonizing keeps the function, so LRP-0 on the folded network is gradient x input of the
    # model as trained (torchvision's modules, BatchNorms and all), pixel by pixel. In float64:
    # LRP-0 divides by pre-activations near zero, which amplifies float32 rounding (2.7e-4 of
    # the map's peak here), and the algorithm, not the rounding, is what is tested.
    model = copy.deepcopy(biased).double().eval()
    images = images.double()
    x = images.clone().requires_grad_(True)
    logits = model(x)
    expected = torch.stack(
        [(torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0] * images).sum(1)
         for k in (0, 5)], dim=1)
    relevance = lrp(model, images, classes=[0, 5], composite=name)
    error = (relevance - expected).abs().max() / expected.abs().max()
    assert error <= 1e-5, f"relative error {error:.2e}"


def _batchnorm_shift_reference(model, images, k):
    """Per image: sum over BatchNorms of shift x d logit_k / d bias (autograd on the bias
    parameters of a fresh copy, one image at a time), the shifts' share under LRP-0."""
    net = copy.deepcopy(model).eval()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.bias.requires_grad_(True)
    shares = []
    for image in images:
        grads = torch.autograd.grad(net(image[None])[0, k], [bn.bias for bn in bns])
        shift = [bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
                 for bn in bns]
        shares.append(sum((g * s).sum() for g, s in zip(grads, shift)).detach())
    return torch.stack(shares)


def test_lrp0_sums_to_the_logit_minus_every_bias_share(images):
    # With BatchNorm shifts and a classifier bias: z = sum(map) + b + shifts' share (Euler).
    net = explainable_copy(_model(shift=True, classifier_bias=True))
    relevance, logits = lrp(net, images, classes=[0, 5], composite="z-pass", return_logits=True)
    bias = net.classifier.bias.detach()
    expected = torch.stack(
        [logits[:, k] - bias[k] - _batchnorm_shift_reference(net, images, k) for k in (0, 5)], 1
    )
    _assert_sums(relevance, expected)
    shifts = lrp0_bias_shares(net, images, [0, 5], batchnorm="pass")["batchnorm"]
    torch.testing.assert_close(shifts, logits[:, [0, 5]] - bias[[0, 5]] - expected,
                               rtol=1e-4, atol=1e-6)
    assert shifts.abs().max() > 0.1 * logits[:, [0, 5]].abs().max()  # the shifts matter here


@pytest.mark.parametrize("batchnorm", ["fold", "pass"])
def test_measured_bias_shares_of_lrp0_equal_eulers_theorem(batchnorm, biased, images):
    # relevance_shares measures what each layer absorbs (relevance in minus out); for LRP-0 the
    # shares are also sum(b * dz/db) (+ thresholds), computed by plain autograd.
    name = "z" if batchnorm == "fold" else "z-pass"
    model, images = copy.deepcopy(biased).double(), images.double()  # see the test above
    measured = relevance_shares(model, images, name, [0, 5, 13])
    reference = lrp0_bias_shares(model, images, [0, 5, 13], batchnorm=batchnorm)
    scale = measured["logit"].abs().max()
    for kind in ("classifier", "batchnorm"):
        torch.testing.assert_close(measured[kind], reference[kind], rtol=0, atol=1e-4 * scale)
    assert reference["batchnorm"].abs().max() > 0.05 * scale  # the shifts matter here


@pytest.mark.parametrize("name", list(LRP_COMPOSITES))
def test_pixels_plus_bias_shares_equal_the_logit_for_every_composite(name, biased, images):
    # Input relevance + what the biases (classifier, folded BatchNorm shifts or BatchNorm layers)
    # absorb = the seeded logit: nothing leaks through pools, concatenations or ReLUs.
    shares = relevance_shares(biased, images, _negligible_epsilon(name), SOME,
                              batchnorm=lrp_batchnorm(name))
    total = shares["pixels"] + shares["classifier"] + shares["batchnorm"]
    torch.testing.assert_close(total, shares["logit"], rtol=1e-3,
                               atol=1e-3 * float(shares["logit"].abs().max()))
    maps = lrp(biased, images, SOME, composite=_negligible_epsilon(name),
               batchnorm=lrp_batchnorm(name))
    torch.testing.assert_close(shares["pixels"], maps.sum(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    if lrp_batchnorm(name) == "fold":
        assert shares["batchnorm"].abs().max() > 1e-3  # the folded shifts absorb


@pytest.mark.parametrize("name", list(FOLDED_COMPOSITES))
def test_fold_and_pass_give_the_same_maps_without_shifts_and_biases(name, images):
    # BN(0) = 0, positive BN scales, no classifier bias, epsilons negligible: folding only moves
    # a positive per-channel scale into the weights, which every rule's ratios cancel. (With a
    # large epsilon or a negative scale the two differ by design: epsilon then depends on the
    # layer's scale, and a negative scale swaps the positive and negative parts.)
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none")
    random_batchnorm(model, torch.Generator().manual_seed(4), shift=False)
    with torch.no_grad():
        model.classifier.bias.zero_()
    model, images = model.double(), images.double()  # the rules, not float32 rounding
    folded = lrp(model, images, SOME, composite=_negligible_epsilon(name), batchnorm="fold")
    kept = lrp(model, images, SOME, composite=_negligible_epsilon(name), batchnorm="pass")
    # The rules' own stabilisers (1e-6, zennit's default) do depend on the scale: 1e-3 of the peak.
    torch.testing.assert_close(folded, kept, rtol=0, atol=1e-3 * float(kept.abs().max()))


def test_conservation_table_accounts_for_every_share(images):
    model = _model(shift=True, classifier_bias=True)
    table = conservation_table(model, images, ["epsilon_gamma_box", "epsilon_gamma_box-pass",
                                               "epsilon"], classes=[3])
    assert len(table) == 3 * BATCH and set(table["class"]) == {OBSERVATIONS[3]}
    by = {name: rows for name, rows in table.groupby("composite")}
    assert set(by["epsilon_gamma_box"]["treatment"]) == {"fold"}
    parts = table[["pixels", "classifier", "batchnorm", "rest"]].sum(axis=1)
    np.testing.assert_allclose(parts, table["logit"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table["pixels_share"], table["pixels"] / table["logit"])
    scale = table["logit"].abs().max()
    assert by["epsilon_gamma_box"]["rest"].abs().max() <= 1e-3 * scale  # biases counted: all
    assert by["epsilon_gamma_box-pass"]["batchnorm"].abs().max() <= 1e-6  # Pass absorbs nothing
    assert by["epsilon"]["rest"].abs().max() > 1e-2 * scale  # a large epsilon absorbs
    summary = share_summary(table)
    assert list(summary.index) == ["epsilon_gamma_box", "epsilon_gamma_box-pass", "epsilon"]
    np.testing.assert_allclose(summary[["pixels", "classifier", "batchnorm", "rest"]].sum(axis=1),
                               1.0, rtol=1e-6)


@pytest.mark.parametrize("name", PASS_BN)
def test_classifier_bias_absorbs_its_epsilon_rule_share(name, images):
    net = explainable_copy(_model(shift=True, classifier_bias=True))
    relevance, z = lrp(net, images, SOME, composite=pass_variant(name), return_logits=True)
    z, b = z[:, SOME], net.classifier.bias.detach()[SOME]
    # LRP-epsilon on the classifier passes on z * (z - b) / (z + eps * sign(z)) of a seed z.
    sign = torch.where(z >= 0, 1.0, -1.0)
    expected = z * (z - b) / (z + SMALL_EPSILON * sign)
    # epsilon_gamma_box: see test_pass_batchnorm_composites_conserve_with_random_batchnorm.
    _assert_sums(relevance, expected, atol=1e-3 if name == "epsilon_gamma_box" else 1e-5)
    assert (expected - z).abs().max() > 0.1  # the bias matters here


def _kept(relevance, logits):
    """Share of the logits the maps keep: projection of the sums on the logits."""
    sums = relevance.sum(dim=(2, 3))
    return float((sums * logits).sum() / (logits * logits).sum())


def test_large_epsilon_absorbs_a_bounded_share(unshifted, images):
    # Measured on this model (scale-aware epsilon, 0.25 x each layer's output RMS): epsilon keeps
    # 0.15 of the logits, montavon2019 0.61, montavon2019_epsilon_pixels 0.50.
    kept = {}
    for name in ABSORBING:
        relevance, logits = lrp(unshifted, images, composite=name, return_logits=True)
        kept[name] = _kept(relevance, logits)
    assert 0.05 < kept["epsilon"] < 0.4
    assert 0.3 < kept["montavon2019"] < 0.9
    assert 0.25 < kept["montavon2019_epsilon_pixels"] < 0.8
    relevance, logits = lrp(
        unshifted,
        images,
        classes=[0, 3],
        composite=make_composite("epsilon", epsilon=100.0),
        return_logits=True,
    )
    assert abs(_kept(relevance, logits[:, [0, 3]])) < 0.01  # a huge epsilon absorbs everything


# ------------------------------------------------------------------ shared forward vs zennit


@pytest.mark.parametrize("name", list(LRP_COMPOSITES))
def test_shared_forward_equals_zennit_attributor_per_class(name, shifted, images):
    # On the network the maps explain (canonized for the folded names): zennit's own backward,
    # one attributor call per class, is the reference.
    net = explainable_copy(shifted, lrp_batchnorm(name))
    classes = ["Edema", 0, 13]
    relevance = lrp(net, images, classes=classes, composite=name)
    for n, k in enumerate([OBSERVATIONS.index("Edema"), 0, 13]):
        with Gradient(net, make_composite(name)) as attributor:
            _, reference = attributor(
                images.clone(), lambda out, k=k: out * nn.functional.one_hot(torch.tensor(k), 14)
            )
        scale = float(reference.sum(1).abs().max())
        torch.testing.assert_close(relevance[:, n], reference.sum(1), rtol=0, atol=1e-5 * scale)
    # A single class takes zennit's own backward (nothing to share): same maps.
    alone = lrp(net, images, classes="Support Devices", composite=name)
    torch.testing.assert_close(alone[:, 0], relevance[:, 2], rtol=0,
                               atol=1e-5 * float(relevance[:, 2].abs().max()))


@pytest.fixture
def fresh_verification(monkeypatch):
    """An empty record of verified layer kinds, restored afterwards."""
    monkeypatch.setattr(shared_module, "_VERIFIED", {})
    return shared_module._VERIFIED


def _zennit_maps(net, images, name, classes):
    maps = []
    for k in classes:
        with Gradient(net, make_composite(name)) as attributor:
            _, reference = attributor(
                images.clone(), lambda out, k=k: out * nn.functional.one_hot(torch.tensor(k), 14))
        maps.append(reference.sum(1))
    return torch.stack(maps, 1)


def test_shared_forward_is_off_for_an_untested_zennit(monkeypatch, shifted, images):
    monkeypatch.setattr(shared_module, "TESTED_ZENNIT", ((9, 0, 0), (10, 0, 0)))
    monkeypatch.setattr(shared_module, "_WARNED", [])
    composite = make_composite("zplus")
    net = explainable_copy(shifted, "fold")
    with pytest.warns(UserWarning, match="using zennit's own backward"):
        with composite.context(net):
            assert shared_module.SharedModifiedForwards(composite).patched == 0
    torch.testing.assert_close(lrp(net, images, [0, 3], composite="zplus"),
                               _zennit_maps(net, images, "zplus", [0, 3]), rtol=0, atol=1e-6)


def test_shared_forward_skips_rules_whose_output_is_modified(shifted):
    composite = make_composite("zplus")
    net = explainable_copy(shifted, "fold")
    with composite.context(net):
        hooks = [h for h in composite.hook_refs if hasattr(h, "output_modifiers")]
        hooks[0].output_modifiers = [lambda output: 2 * output] * len(hooks[0].output_modifiers)
        shared = shared_module.SharedModifiedForwards(composite)
        assert shared.patched == len(hooks) - 1


def test_a_fast_path_that_disagrees_with_zennit_is_switched_off(monkeypatch, fresh_verification,
                                                                 shifted, images):
    # A broken input gradient (the assumption "it depends only on .weight" failing) is caught on
    # first use: zennit's result is returned and the kind keeps zennit's backward.
    true_gradient = shared_module._input_gradient

    def broken(module, weight, grad, input_shape):
        return 1.5 * true_gradient(module, weight, grad, input_shape)

    monkeypatch.setattr(shared_module, "_input_gradient", broken)
    net = explainable_copy(shifted, "fold")
    maps = lrp(net, images, [0, 3, 7], composite="epsilon_gamma_box")
    assert fresh_verification and not any(fresh_verification.values())
    torch.testing.assert_close(maps, _zennit_maps(net, images, "epsilon_gamma_box", [0, 3, 7]),
                               rtol=0, atol=1e-5 * float(maps.abs().max()))


def test_the_fast_path_is_verified_once_per_kind_and_kept(fresh_verification, shifted, images):
    lrp(shifted, images, [0, 3], composite="epsilon_plus_flat")
    assert fresh_verification and all(fresh_verification.values())


def test_proportional_max_pool_matches_a_hand_computation():
    from chexlib.explain.composites import ProportionalMaxPool

    pool = nn.MaxPool2d(3, stride=2, padding=1)
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    relevance_out = torch.randn(1, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    expected = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            rows = range(max(0, 2 * i - 1), min(5, 2 * i + 2))
            cols = range(max(0, 2 * j - 1), min(5, 2 * j + 2))
            window = sum(float(x[0, 0, r, c]) for r in rows for c in cols)
            for r in rows:
                for c in cols:
                    expected[0, 0, r, c] += x[0, 0, r, c] / window * relevance_out[0, 0, i, j]
    rule = ProportionalMaxPool()
    rule.stored_tensors["input"] = (x,)
    (got,) = rule.backward(pool, (torch.zeros_like(x),), (relevance_out,))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got.sum(), relevance_out.sum(), rtol=1e-5, atol=1e-6)


def test_batches_and_cached_copy_give_the_same_maps(images):
    model = _model(shift=True, classifier_bias=True)
    whole = lrp(model, images, classes=[2])
    split = lrp(model, images, classes=[2], batch_size=1)
    # Float32 rounding, not a different map: for batch 1 and batch 2 oneDNN may pick other
    # convolution kernels, and LRP's division by small z sums amplifies their rounding (measured
    # on an AMD EPYC: 0.11 % of the map's peak, 1.2e-6; atol 1e-6 failed there). A batching bug
    # (images mixed up, a sample dropped) differs by the whole map.
    torch.testing.assert_close(split, whole, rtol=0, atol=5e-3 * float(whole.abs().max()))
    with torch.no_grad():
        model.classifier.weight.mul_(2)  # the cached copy is now stale and must be rebuilt
    torch.testing.assert_close(lrp(model, images, classes=[2]), 2 * whole, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ errors and listing


def test_composites_are_listed_with_descriptions():
    listed = lrp_composites()
    folded = ["epsilon", "z", "alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box",
              "montavon2019", "montavon2019_epsilon_pixels"]
    assert list(listed) == folded + [f"{name}-pass" for name in folded]
    assert all(isinstance(v, str) and v for v in listed.values())
    assert [lrp_batchnorm(name) for name in listed] == ["fold"] * 8 + ["pass"] * 8


def test_unknown_composite_lists_valid_names(shifted, images):
    with pytest.raises(ValueError, match="epsilon_plus_flat.*montavon2019"):
        lrp(shifted, images, composite="gradcam")
    with pytest.raises(ValueError, match="composite='nope'.*alpha2_beta1"):
        make_composite("nope")


def test_unknown_class_lists_valid_names(shifted, images):
    with pytest.raises(ValueError, match="'Pneumonitis'.*No Finding.*Support Devices"):
        lrp(shifted, images, classes=["Edema", "Pneumonitis"])
    with pytest.raises(ValueError, match="0..13"):
        lrp(shifted, images, classes=[14])


def test_composite_names_are_listed_once_for_params_and_explain():
    from chexlib import params
    from chexlib.explain.composites import (
        LARGE_EPSILON,
        LARGE_EPSILON_COMPOSITES,
        PASS_BATCHNORM,
        ZERO_EPSILON,
    )

    assert params.SCHEMA["lrp_composite"].choices == tuple(LRP_COMPOSITES)
    def described_eps(name):
        return float(re.search(r"eps=([0-9.e+-]+)[ )]", LRP_COMPOSITES[name]).group(1))

    assert described_eps("epsilon") == LARGE_EPSILON and described_eps("z") == ZERO_EPSILON
    assert set(PASS_BATCHNORM) == set(PASS_BN) and set(LARGE_EPSILON_COMPOSITES) == set(ABSORBING)
    for name in LRP_COMPOSITES:
        make_composite(name)  # every listed name builds


def test_the_zennit_bound_of_pyproject_is_the_tested_range():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    spec = next(d for d in project["project"]["dependencies"] if d.startswith("zennit"))
    low, high = shared_module.TESTED_ZENNIT
    as_text = ".".join
    assert spec.replace(" ", "") == (f"zennit>={as_text(map(str, low))},"
                                     f"<{as_text(map(str, high[:2]))}")
    assert shared_module.zennit_is_tested()  # the installed zennit is in the range


@pytest.mark.parametrize("name", ["montavon2019_epsilon_pixels", "alpha2_beta1-pass"])
def test_per_image_targets_equal_zennit_with_per_image_seeds(name, biased, images):
    # Each slot of the table against zennit's own Attributor seeded image by image (the same
    # batch, so that convolution rounding is the same): one batched pass must not mix images or
    # classes, and an empty slot is a zero map.
    table = torch.tensor([[3, 9, 1], [11, -1, -1]])
    maps = lrp(biased, images, table, composite=name)
    assert maps.shape == (BATCH, 3, SIZE, SIZE)
    net = explainable_copy(biased, lrp_batchnorm(name))
    with Gradient(model=net, composite=make_composite(name)) as attributor:
        for slot in range(table.shape[1]):
            x = images.clone().requires_grad_(True)
            logits = net(x).detach()
            seed = torch.zeros_like(logits)
            for i, k in enumerate(table[:, slot].tolist()):
                if k >= 0:
                    seed[i, k] = logits[i, k]
            _, expected = attributor(x, seed)
            torch.testing.assert_close(maps[:, slot], expected.sum(1), rtol=1e-4,
                                       atol=1e-5 * float(expected.abs().max()))
    assert not maps[1, 1:].any()
