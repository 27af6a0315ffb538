"""Canonizing DenseNet-121 for LRP: every BatchNorm merged into a linear layer, same function.

LRP rules are defined for linear layers followed by ReLUs. A BatchNorm in eval mode is an affine
map per channel, ``BN(x) = s * x + t`` with ``s = weight / sqrt(running_var + eps)`` and
``t = bias - s * running_mean``; left alone (zennit's ``Pass``), its shift ``t`` is silently
credited to the pixels. Canonizing rewrites the network into an equivalent one without
BatchNorms (Montavon et al. 2019, §10.3.2; Pahde et al., CVPR-W 2023), so that every shift
becomes a bias, which absorbs its share of relevance like any bias. DenseNet-121 has both kinds
of BatchNorm placement:

**Conv -> BN** (``conv0 -> norm0`` and each dense layer's ``conv1 -> norm2``: 59 BatchNorms)
fold into the convolution before them::

    BN(W * x + b) = (s W) * x + (s b + t)

**BN -> ReLU -> 1x1 conv** (each dense layer's ``norm1 -> relu1 -> conv1``, each transition's
``norm -> relu -> conv``, and ``norm5 -> relu -> pool -> classifier`` in the head: 62) merge
into the layer *after* them, with the ReLU replaced by a thresholded ReLU that works on the
pre-BatchNorm value ``x``. Per channel, with ``theta = -t / s``::

    ReLU(s x + t) = s * m(x) + t,    m(x) = x where s x + t > 0, else theta

(check: where ``s x + t <= 0``, ``s * theta + t = 0``). ``m`` is exact for negative scales
too (then it is active where ``x < theta``); a channel with ``s = 0`` is the constant
``ReLU(t)``, so ``m = 0`` there and ``ReLU(t)`` goes into the bias. The next layer is linear and
acts on every position alike (a 1x1 convolution without padding, or the global average pool
and the classifier), so::

    W ReLU(s x + t) = (W diag(s)) m(x) + W t

The thresholded ReLU (:class:`ThresholdedReLU`) has no LRP rule: its gradient, 1 where active and
0 elsewhere, passes an active position's relevance on unchanged and stops the relevance the
next layer assigned to the constant ``theta`` of an inactive one (the merged shift's share,
absorbed like a bias).

A dense layer's ``conv1`` takes both merges (``norm1`` before it, ``norm2`` after it); every
other convolution keeps its weights. The parameters are computed in float64 and stored in the
model's dtype: the canonized copy computes the model's logits to float32 rounding
(``tests/test_explain_canonizers.py``: <= 1e-5 on random models with negative scales).

zennit's ``SequentialMergeBatchNorm`` is not used: it pairs layers by registration order and
finds false conv -> BN pairs across DenseNet's concatenations (``reference/explainability.md``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.models.densenet import _DenseBlock, _DenseLayer, _Transition

from chexlib.errors import ParameterError

__all__ = ["ThresholdedReLU", "batchnorm_affine", "canonize_densenet", "count_batchnorms"]


class ThresholdedReLU(nn.Module):
    """``m(x) = x`` where ``direction * (x - threshold) > 0``, else ``threshold``, per channel.

    The ReLU of a merged BatchNorm (module docstring): with ``direction = sign(s)`` and
    ``threshold = -t / s``, ``s * m(x) + t = ReLU(s * x + t)``; ``direction = 0`` marks a
    constant channel (``m = threshold = 0``).

    Parameters
    ----------
    threshold, direction : Tensor [C]
    """

    def __init__(self, threshold: torch.Tensor, direction: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("threshold", threshold.detach().clone())
        self.register_buffer("direction", direction.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        threshold = self.threshold.view(shape)
        active = self.direction.view(shape) * (x - threshold) > 0
        return torch.where(active, x, threshold.to(x.dtype).expand_as(x))

    def extra_repr(self) -> str:
        return f"channels={len(self.threshold)}"


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``s`` and shift ``t`` of an eval-mode BatchNorm, ``BN(x) = s x + t``, in float64."""
    var = bn.running_var.double()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - scale * bn.running_mean.double()


def count_batchnorms(model: nn.Module) -> int:
    """The number of BatchNorm modules in ``model`` (0 once canonized)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def canonize_densenet(model: nn.Module) -> nn.Module:
    """A copy of a chexlib DenseNet-121 with every BatchNorm merged (the module docstring).

    Parameters
    ----------
    model : nn.Module
        A :class:`chexlib.densenet.DenseNet121` (``features`` ending in ``norm5``, then
        ``relu``, ``pool``, ``flatten``, ``classifier`` modules). Never modified, also when an
        error is raised half way: the work is done on a deep copy.

    Returns
    -------
    nn.Module
        An eval-mode copy without BatchNorms that computes the same logits; the merged
        BatchNorms are ``nn.Identity``, the merged ReLUs :class:`ThresholdedReLU`.

    Raises
    ------
    ParameterError
        ``model`` does not have DenseNet-121's structure; the message names the module.
    """
    net = copy.deepcopy(model).eval()
    features = _features(net)
    _fold_after(features, "conv0", "norm0", "features")
    for stage, block in list(features.named_children()):
        if isinstance(block, _DenseBlock):
            for name, layer in block.named_children():
                _canonize_dense_layer(layer, f"features.{stage}.{name}")
        elif isinstance(block, _Transition):
            _merge_before(block, "norm", "relu", "conv", f"features.{stage}")
    _canonize_head(net)
    left = [name for name, m in net.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ParameterError(f"model: BatchNorms {', '.join(left)} are not at a place the "
                             "DenseNet-121 canonizer knows (conv -> BN, or BN -> ReLU -> 1x1 conv)")
    return net


def _features(net: nn.Module) -> nn.Sequential:
    features = getattr(net, "features", None)
    parts = ("relu", "pool", "flatten", "classifier")
    if not isinstance(features, nn.Sequential) or not all(hasattr(net, p) for p in parts):
        raise ParameterError(
            f"model: {type(net).__name__} is not a chexlib DenseNet-121 (features, relu, pool, "
            "flatten, classifier); expected chexlib.model.densenet121()")
    return features


def _canonize_dense_layer(layer: nn.Module, where: str) -> None:
    if not isinstance(layer, _DenseLayer):
        raise ParameterError(f"{where}: expected a torchvision dense layer, got "
                             f"{type(layer).__name__}")
    _merge_before(layer, "norm1", "relu1", "conv1", where)
    _fold_after(layer, "conv1", "norm2", where)


def _module(parent: nn.Module, name: str, kind: type, where: str) -> nn.Module:
    module = getattr(parent, name, None)
    if not isinstance(module, kind):
        raise ParameterError(f"{where}.{name}: expected {kind.__name__}, got "
                             f"{type(module).__name__}")
    return module


def _fold_after(parent: nn.Module, conv_name: str, bn_name: str, where: str) -> None:
    """Conv -> BN: ``(s W) * x + (s b + t)``; the BatchNorm becomes an identity."""
    conv = _module(parent, conv_name, nn.Conv2d, where)
    bn = _module(parent, bn_name, nn.BatchNorm2d, where)
    scale, shift = batchnorm_affine(bn)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else scale * conv.bias.double() + shift
    setattr(parent, conv_name, _conv_like(conv, weight, bias))
    setattr(parent, bn_name, nn.Identity())


def _merge_before(parent: nn.Module, bn_name: str, relu_name: str, conv_name: str,
                  where: str) -> None:
    """BN -> ReLU -> 1x1 conv: thresholded ReLU, ``W diag(s)`` and bias ``W t``."""
    bn = _module(parent, bn_name, nn.BatchNorm2d, where)
    _module(parent, relu_name, nn.ReLU, where)
    conv = _module(parent, conv_name, nn.Conv2d, where)
    if conv.kernel_size != (1, 1) or conv.padding not in ((0, 0), 0) or conv.groups != 1:
        raise ParameterError(f"{where}.{conv_name}: expected a 1x1 convolution without padding "
                             f"after {bn_name} -> {relu_name}, got {conv}")
    threshold, weight_scale, constant, direction = _threshold(bn)
    kernel = conv.weight.double()[:, :, 0, 0]
    bias = kernel @ constant + (0 if conv.bias is None else conv.bias.double())
    weight = conv.weight.double() * weight_scale.view(1, -1, 1, 1)
    setattr(parent, bn_name, nn.Identity())
    setattr(parent, relu_name, ThresholdedReLU(threshold.to(conv.weight.dtype), direction))
    setattr(parent, conv_name, _conv_like(conv, weight, bias))


def _canonize_head(net: nn.Module) -> None:
    """norm5 -> relu -> average pool -> classifier: the average pool keeps constants."""
    norm5 = _module(net.features, "norm5", nn.BatchNorm2d, "features")
    _module(net, "relu", nn.ReLU, "model")
    if not isinstance(net.pool, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        raise ParameterError(f"model.pool: expected an average pool, got {type(net.pool).__name__}")
    classifier = _module(net, "classifier", nn.Linear, "model")
    threshold, weight_scale, constant, direction = _threshold(norm5)
    weight = classifier.weight.double()
    bias = weight @ constant + (0 if classifier.bias is None else classifier.bias.double())
    merged = nn.Linear(classifier.in_features, classifier.out_features, bias=True,
                       device=classifier.weight.device, dtype=classifier.weight.dtype)
    merged.weight.copy_(weight * weight_scale.view(1, -1))
    merged.bias.copy_(bias)
    net.features.norm5 = nn.Identity()
    net.relu = ThresholdedReLU(threshold.to(classifier.weight.dtype), direction)
    net.classifier = merged


def _threshold(bn: nn.BatchNorm2d):
    """Per channel: threshold ``-t/s``, the weight scale ``s``, the constant ``t`` (``ReLU(t)``
    where ``s = 0``) and the direction ``sign(s)``."""
    scale, shift = batchnorm_affine(bn)
    constant_channel = scale == 0
    safe = torch.where(constant_channel, torch.ones_like(scale), scale)
    threshold = torch.where(constant_channel, torch.zeros_like(shift), -shift / safe)
    constant = torch.where(constant_channel, shift.clamp(min=0), shift)
    direction = torch.sign(scale).to(bn.running_mean.dtype)
    return threshold, scale, constant, direction


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A convolution with ``conv``'s geometry, the given weight and a bias."""
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, bias=True,
                    padding_mode=conv.padding_mode, device=conv.weight.device,
                    dtype=conv.weight.dtype)
    new.weight.copy_(weight)
    new.bias.copy_(bias)
    return new
