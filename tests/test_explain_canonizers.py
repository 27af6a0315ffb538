"""chexlib.explain.canonizers: DenseNet-121 with every BatchNorm merged computes the same function.

References: the original model's logits and ``torch.relu`` of the BatchNorm's affine map, never
the canonizer's own output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chexlib.explain import explainable_copy, lrp
from chexlib.explain.canonizers import (
    ThresholdedReLU,
    batchnorm_affine,
    canonize_densenet,
    count_batchnorms,
)
from chexlib.model import densenet121
from support import random_batchnorm

SIZE = 64


def _model(seed: int, negative_share: float = 0.2) -> nn.Module:
    torch.manual_seed(seed)
    model = densenet121(num_classes=14, weights="none")
    random_batchnorm(model, torch.Generator().manual_seed(seed + 1), negative_share=negative_share)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.linspace(-0.5, 0.5, 14))
        # A few constant channels (scale 0): ReLU(t) must go into the next layer's bias.
        model.features.denseblock2.denselayer3.norm1.weight[:4] = 0.0
        model.features.norm5.weight[:3] = 0.0
    return model.eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("seed", [0, 10])
def test_canonized_copy_computes_the_same_logits(seed, images):
    model = _model(seed)
    net = canonize_densenet(model)
    assert count_batchnorms(model) == 121 and count_batchnorms(net) == 0
    thresholds = [m for m in net.modules() if isinstance(m, ThresholdedReLU)]
    assert len(thresholds) == 58 + 3 + 1  # each dense layer's norm1, the transitions, norm5
    assert any((m.direction < 0).any() for m in thresholds)  # negative scales are exercised
    with torch.no_grad():
        expected, got = model(images), net(images)
    assert (got - expected).abs().max().item() <= 1e-5
    assert expected.abs().max().item() > 0.1  # not a trivially small output


def test_thresholded_relu_is_relu_of_the_affine_map_for_every_sign_of_scale():
    bn = nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.7, 0.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.3, 0.4, 0.9, -1.0]))
        bn.running_mean.copy_(torch.tensor([0.2, -0.5, 1.0, 0.0]))
        bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 0.3]))
    # A 1x1 convolution after BN -> ReLU, merged: conv(ReLU(BN(x))) must be unchanged.
    conv = nn.Conv2d(4, 3, 1, bias=False)
    block = nn.Sequential(bn, nn.ReLU(), conv).eval()
    x = torch.randn(5, 4, 6, 6, generator=torch.Generator().manual_seed(0)) * 2
    scale, shift = batchnorm_affine(bn)
    reference = torch.relu(scale.float().view(1, -1, 1, 1) * x + shift.float().view(1, -1, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(block[1](block[0](x)), reference, rtol=1e-5, atol=1e-6)
        expected = block(x)
        from chexlib.explain.canonizers import _merge_before

        holder = nn.Module()
        holder.norm, holder.relu, holder.conv = bn, nn.ReLU(), conv
        _merge_before(holder, "norm", "relu", "conv", "test")
        assert isinstance(holder.relu, ThresholdedReLU) and isinstance(holder.norm, nn.Identity)
        got = holder.conv(holder.relu(holder.norm(x)))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_callers_model_is_never_modified(images):
    model = _model(0).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        outputs = model.eval()(images)
    model.train()
    canonize_densenet(model)
    explainable_copy(model, batchnorm="fold")
    lrp(model, images, classes=[0])  # folds by default
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model.eval()(images), outputs)
    assert count_batchnorms(model) == 121


def test_an_error_half_way_names_the_module_and_leaves_the_model_alone(images):
    model = _model(1)
    # Dense block 3 is canonized after blocks 1 and 2: the error comes half way.
    model.features.denseblock3.denselayer5.conv1 = nn.Conv2d(
        model.features.denseblock3.denselayer5.conv1.in_channels, 128, 3, padding=1, bias=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        outputs = model(images)
    with pytest.raises(ValueError, match=r"features\.denseblock3\.denselayer5\.conv1: expected a "
                                         r"1x1 convolution"):
        canonize_densenet(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert count_batchnorms(model) == 121
    with torch.no_grad():
        assert torch.equal(model(images), outputs)


def test_a_model_of_another_structure_is_refused():
    with pytest.raises(ValueError, match="not a chexlib DenseNet-121"):
        canonize_densenet(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="batchnorm='merge': expected one of 'fold', 'pass'"):
        explainable_copy(_model(0), batchnorm="merge")


def test_a_folded_copy_cannot_be_unfolded(images):
    folded = explainable_copy(_model(0), batchnorm="fold")
    with pytest.raises(ValueError, match="folded.*batchnorm='pass' needs the model itself"):
        explainable_copy(folded, batchnorm="pass")
    with pytest.raises(ValueError, match="composite 'z-pass' means batchnorm='pass'"):
        lrp(_model(0), images, [0], composite="z-pass", batchnorm="fold")
