"""chexlib.explain: LRP on DenseNet-121 checked against independent references.

References: the model's own logits (conservation: a map sums to the logit it was seeded with,
minus what the classifier bias absorbs, derived here from the epsilon rule), plain autograd
(LRP-0 through a ReLU network equals gradient x input, BatchNorm shifts included), and zennit's
own ``Gradient`` attributor called once per class. Never the code's own output.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
from torch import nn
from zennit.attribution import Gradient

from chexlib.explain import LRP_COMPOSITES, explainable_copy, lrp, lrp_composites
from chexlib.explain.composites import SMALL_EPSILON, make_composite
from chexlib.explain.conservation import batchnorm_shift_share, conservation_table
from chexlib.model import densenet121
from chexlib.observations import OBSERVATIONS
from support import random_batchnorm

SIZE, BATCH = 64, 2
# Composites whose epsilon is large on purpose: they absorb relevance by design.
ABSORBING = ("epsilon", "montavon2019")
# Composites whose BatchNorms take zennit's Pass rule: conservative whatever the BN shift
# (on inputs without exactly-zero features: see the dead-feature test).
PASS_BN = ("alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box")
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
    """Random BN statistics and shifts, classifier bias zero."""
    return explainable_copy(_model(shift=True, classifier_bias=False))


@pytest.fixture(scope="module")
def unshifted():
    """Random BN statistics and scales, BN(0) = 0, classifier bias zero."""
    return explainable_copy(_model(shift=False, classifier_bias=False))


def _assert_sums(relevance, expected):
    sums = relevance.sum(dim=(2, 3))
    torch.testing.assert_close(sums, expected, rtol=1e-3, atol=1e-5)


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
    relevance, logits = lrp(shifted, images, composite=name, return_logits=True)
    assert relevance.shape == (BATCH, 14, SIZE, SIZE)
    _assert_sums(relevance, logits)


@pytest.mark.parametrize("name", list(LRP_COMPOSITES))
def test_every_composite_conserves_without_batchnorm_shift(name, unshifted, images):
    # Large-epsilon composites with their epsilon made negligible: the structure leaks nothing.
    eps = 1e-9 if name in ABSORBING else None
    relevance, logits = lrp(
        unshifted, images, SOME, composite=make_composite(name, epsilon=eps), return_logits=True
    )
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
        relevance, logits = lrp(model, images, [0, 5], composite=name, return_logits=True)
        kept[shift] = relevance.sum(dim=(2, 3)) / logits[:, [0, 5]]
    assert (kept[False] - 1).abs().max() < 1e-4
    assert 1e-3 < (1 - kept[True]).abs().min() and (1 - kept[True]).abs().max() < 0.05


def test_lrp0_equals_gradient_times_input_with_batchnorm_shifts(shifted, images):
    # LRP-0 through ReLU, linear, pooling and concatenation layers is gradient x input, biases
    # included; so its maps do not sum to the logit when BatchNorm shifts absorb relevance.
    x = images.clone().requires_grad_(True)
    logits = shifted(x)
    expected = torch.stack(
        [
            (torch.autograd.grad(logits[:, k].sum(), x, retain_graph=True)[0] * images).sum(1)
            for k in (0, 5)
        ],
        dim=1,
    )
    relevance = lrp(shifted, images, classes=[0, 5], composite="z")
    torch.testing.assert_close(relevance, expected, rtol=0, atol=1e-5)


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
    relevance, logits = lrp(net, images, classes=[0, 5], composite="z", return_logits=True)
    bias = net.classifier.bias.detach()
    expected = torch.stack(
        [logits[:, k] - bias[k] - _batchnorm_shift_reference(net, images, k) for k in (0, 5)], 1
    )
    _assert_sums(relevance, expected)
    shifts = batchnorm_shift_share(net, images, [0, 5])
    torch.testing.assert_close(shifts, logits[:, [0, 5]] - bias[[0, 5]] - expected,
                               rtol=1e-4, atol=1e-6)
    assert shifts.abs().max() > 0.1 * logits[:, [0, 5]].abs().max()  # the shifts matter here


def test_conservation_table_accounts_for_every_share(images):
    net = explainable_copy(_model(shift=True, classifier_bias=True))
    table = conservation_table(net, images, ["epsilon_gamma_box", "z", "epsilon"], classes=[3])
    assert len(table) == 3 * BATCH and set(table["class"]) == {OBSERVATIONS[3]}
    scale = table["logit"].abs().max()
    by = {name: rows for name, rows in table.groupby("composite")}
    # Pass-BatchNorm composite: nothing absorbed beyond the classifier bias.
    assert by["epsilon_gamma_box"]["residual"].abs().max() <= 1e-3 * scale
    # LRP-0: exactly the BatchNorm shifts' share is missing.
    np.testing.assert_allclose(by["z"]["residual"], by["z"]["batchnorm_shifts"],
                               rtol=1e-3, atol=1e-4 * scale)
    assert (by["epsilon"]["kept"].abs() < 1).all()  # a large epsilon keeps less than all


@pytest.mark.parametrize("name", PASS_BN)
def test_classifier_bias_absorbs_its_epsilon_rule_share(name, images):
    net = explainable_copy(_model(shift=True, classifier_bias=True))
    relevance, z = lrp(net, images, SOME, composite=name, return_logits=True)
    z, b = z[:, SOME], net.classifier.bias.detach()[SOME]
    # LRP-epsilon on the classifier passes on z * (z - b) / (z + eps * sign(z)) of a seed z.
    sign = torch.where(z >= 0, 1.0, -1.0)
    expected = z * (z - b) / (z + SMALL_EPSILON * sign)
    _assert_sums(relevance, expected)
    assert (expected - z).abs().max() > 0.1  # the bias matters here


def _kept(relevance, logits):
    """Share of the logits the maps keep: projection of the sums on the logits."""
    sums = relevance.sum(dim=(2, 3))
    return float((sums * logits).sum() / (logits * logits).sum())


def test_large_epsilon_absorbs_a_bounded_share(unshifted, images):
    # Measured on this model: epsilon 0.25 keeps 0.18 of the logits, montavon2019 0.60.
    kept = {}
    for name in ABSORBING:
        relevance, logits = lrp(unshifted, images, composite=name, return_logits=True)
        kept[name] = _kept(relevance, logits)
    assert 0.05 < kept["epsilon"] < 0.4
    assert 0.3 < kept["montavon2019"] < 0.9
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
    classes = ["Edema", 0, 13]
    relevance = lrp(shifted, images, classes=classes, composite=name)
    for n, k in enumerate([OBSERVATIONS.index("Edema"), 0, 13]):
        with Gradient(shifted, make_composite(name)) as attributor:
            _, reference = attributor(
                images.clone(), lambda out, k=k: out * nn.functional.one_hot(torch.tensor(k), 14)
            )
        torch.testing.assert_close(relevance[:, n], reference.sum(1), rtol=0, atol=1e-5)
    # A single class takes zennit's own backward (nothing to share): same maps.
    alone = lrp(shifted, images, classes="Support Devices", composite=name)
    torch.testing.assert_close(alone[:, 0], relevance[:, 2], rtol=0, atol=1e-5)


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
    assert set(listed) == {
        "epsilon",
        "z",
        "alpha2_beta1",
        "zplus",
        "epsilon_plus_flat",
        "epsilon_gamma_box",
        "montavon2019",
    }
    assert all(isinstance(v, str) and v for v in listed.values())


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
        return float(re.search(r"eps=([0-9.e+-]+)\)", LRP_COMPOSITES[name]).group(1))

    assert described_eps("epsilon") == LARGE_EPSILON and described_eps("z") == ZERO_EPSILON
    assert set(PASS_BATCHNORM) == set(PASS_BN) and set(LARGE_EPSILON_COMPOSITES) == set(ABSORBING)
    for name in LRP_COMPOSITES:
        make_composite(name)  # every listed name builds
