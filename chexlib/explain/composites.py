"""Named LRP composites: which zennit rule explains which layer of the DenseNet-121.

A composite maps every layer to an LRP rule (zennit's rules; zennit is a dependency, LGPL, never
copied here). The names below are the variants the notebooks compare; each is one entry of the
registry (:func:`chexlib.methods.register_composite`) that names its builder in this module
(``zplus`` -> :func:`zplus_composite`, ...):

=====================  ========================================================================
``epsilon``            LRP-epsilon on every convolution, BatchNorm and the classifier, eps = 0.25
``z``                  LRP-0 everywhere (epsilon = 1e-9: only guards against division by zero)
``alpha2_beta1``       LRP-alpha2-beta1 on every convolution, LRP-epsilon (1e-6) on the classifier
``zplus``              Deep-Taylor style: z+ on the convolutions, z^B (ZBox) on the pixel layer,
                       LRP-epsilon (1e-6) on the classifier
``epsilon_plus_flat``  zennit's EpsilonPlusFlat: flat on the pixel layer, z+ on the other
                       convolutions, LRP-epsilon (1e-6) on the classifier
``epsilon_gamma_box``  zennit's EpsilonGammaBox: z^B on the pixel layer, gamma (0.25) on the other
                       convolutions, LRP-epsilon (1e-6) on the classifier
``montavon2019``       Montavon et al. 2019's recipe by depth (see below)
=====================  ========================================================================

Every composite also carries zennit's base map: ``Pass`` on ReLUs and BatchNorms (relevance goes
through unchanged), ``Norm`` on average pools (the transitions' 2x2 pools and the head's global
pool). Max pooling (``pool0``) and ``torch.cat`` keep their gradient, which is already exact LRP
for them (each output's relevance goes to the input it came from).

BatchNorm and the epsilon rule: an epsilon (or LRP-0) rule divides a neuron's relevance by the
neuron's own output, so that relevance must be in proportion to that output. With ``Pass`` on a
BatchNorm whose shift is not zero, it is not (it follows the shifted, rectified value), a near-zero
pre-BatchNorm output gets a large relevance, and LRP-0 on a random DenseNet-121 produced maps of
1e25. So ``epsilon`` and ``z`` apply their epsilon rule to BatchNorms too (an affine layer in
eval mode; its shift absorbs relevance like any bias), and ``montavon2019`` does so from
``denseblock3`` on (its epsilon region, ``norm5`` included). Then LRP-0 (``z``) equals gradient x
input exactly (tested): it sums to the logit only when no BatchNorm shifts it; a trained
network's shifts absorb (or add) relevance. The z+, alpha-beta, gamma and flat rules divide by
sums of positive parts, are not disturbed by the shift, and keep ``Pass``: conservative whatever
the BatchNorm statistics (tested) with one exception. A feature that is exactly zero over a
layer's whole receptive field (a dead channel, a uniform background patch after a ReLU) can be
lit up by the next BatchNorm's positive shift and receive relevance, which its own layer then
has no positive contribution to hand it to (z+, gamma, alpha-beta) or its pooling window no
activation (``Norm``): that relevance is the shift's, and it stops there, absorbed like a bias.
On random inputs this does not occur (conservation to 1e-5, tested); a test with 16 dead
channels shows the loss (about 1%) and that it vanishes when BatchNorm(0) = 0. On the trained
``default`` model and real phantom images these composites keep 97-102 % of the logit minus
the classifier bias (notebook 04, section 2).

``montavon2019`` groups DenseNet-121's layers by depth, by module name:

- pixels: the first convolution (``features.conv0``) -> z^B with the input's real range;
- lower: ``denseblock1``, ``transition1``, ``denseblock2``, ``transition2`` -> gamma (0.25);
- middle: ``denseblock3``, ``transition3``, ``denseblock4`` (and their BatchNorms, ``norm5``)
  -> LRP-epsilon (0.25);
- top: the classifier -> LRP-0 (epsilon 1e-9).

Large epsilon absorbs relevance on purpose (``epsilon``, and ``montavon2019``'s middle blocks): a
neuron passes on only ``|z| / (|z| + eps)`` of its relevance, and with mixed signs a class's sum
can even change sign. How much is lost depends on the activations' scale. On the random-weight
test model (64 px, BatchNorm without shift, classifier bias zero) the maps keep, as the projection
``sum(S * z) / sum(z * z)`` of the map sums S on the logits z, 0.18 of the logits with
``epsilon`` and 0.60 with ``montavon2019``; epsilon = 100 keeps nothing. A trained model with
larger pre-activations loses less. ``tests/test_explain_lrp.py`` bounds these shares.
"""

from __future__ import annotations

import torch
from torch import nn
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonGammaBox,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite, Hook
from zennit.rules import Epsilon, Gamma, ZBox, ZPlus
from zennit.types import BatchNorm, Convolution

from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib import methods
from chexlib.errors import ParameterError
from chexlib.methods import LRP_COMPOSITES

#: The epsilon of "epsilon" and of montavon2019's middle blocks: large on purpose, it keeps only
#: the dominant contributions (sparser, less noisy maps) and absorbs the rest.
LARGE_EPSILON = 0.25
#: LRP-0: epsilon only prevents a division by zero.
ZERO_EPSILON = 1e-9
#: Epsilon on the classifier for the composites that use other rules below it (zennit's default).
SMALL_EPSILON = 1e-6
#: Gamma of the gamma rule (zennit's default, Montavon et al. 2019's example value).
GAMMA = 0.25

#: The real range of an ImageNet-normalised pixel, over the three channels: the smallest
#: (0 - mean) / std and the largest (1 - mean) / std. The z^B rule needs the box inputs live in.
INPUT_LOW: float = min((0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
INPUT_HIGH: float = max((1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


#: Composites whose BatchNorms take zennit's ``Pass`` rule: their maps sum to the logit minus
#: the classifier bias, up to what BatchNorm shifts put on exactly-zero features.
PASS_BATCHNORM = ("alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box")
#: Composites whose (large) epsilon rule absorbs relevance on purpose.
LARGE_EPSILON_COMPOSITES = ("epsilon", "montavon2019")

#: montavon2019's depth groups, by the name of the DenseNet-121 stage a module sits in.
LOWER_STAGES = ("denseblock1", "transition1", "denseblock2", "transition2")
MIDDLE_STAGES = ("denseblock3", "transition3", "denseblock4")


def lrp_composites() -> dict[str, str]:
    """The composite names :func:`make_composite` knows, each with a one-line description."""
    return dict(LRP_COMPOSITES)


def make_composite(
    name: str,
    low: float | torch.Tensor | None = None,
    high: float | torch.Tensor | None = None,
    *,
    epsilon: float | None = None,
) -> Composite:
    """A fresh zennit composite for one of :data:`LRP_COMPOSITES`.

    A zennit composite can be registered to one model at a time, so build one per use.

    Parameters
    ----------
    name : str
        One of :data:`LRP_COMPOSITES`.
    low, high : float or Tensor broadcastable to [N, 3, H, W], optional
        The smallest and largest possible input value, for the z^B rule (``zplus``,
        ``epsilon_gamma_box``, ``montavon2019``). Default: :data:`INPUT_LOW`,
        :data:`INPUT_HIGH`, the range of ImageNet-normalised pixels.
    epsilon : float, optional
        Replaces the epsilon of every LRP-epsilon rule in the composite (the classifier's, and the
        convolutions' in ``epsilon`` and ``montavon2019``). Default: the composite's own.

    Returns
    -------
    zennit.core.Composite

    Raises
    ------
    ParameterError
        A ValueError: unknown ``name`` (the message lists the valid ones), ``low >= high`` or a
        negative ``epsilon``.
    """
    method = methods.registered("lrp").get(name)
    if method is None:
        raise ParameterError(
            f"composite={name!r}: unknown LRP composite; expected one of {', '.join(LRP_COMPOSITES)}"
        )
    low = INPUT_LOW if low is None else low
    high = INPUT_HIGH if high is None else high
    if bool(torch.any(torch.as_tensor(low) >= torch.as_tensor(high))):
        raise ParameterError(f"low={low!r}, high={high!r}: expected low < high")
    if epsilon is not None and not epsilon >= 0:
        raise ParameterError(f"epsilon={epsilon!r}: expected a number >= 0")
    return method.load_composite()(low, high, epsilon)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _epsilon_everywhere(eps: float) -> Composite:
    rule = Epsilon(epsilon=eps)
    # BatchNorm before the base map's Pass: an epsilon rule divides by the layer's own output, so
    # the relevance it receives must be in proportion to that output, i.e. come through the
    # BatchNorm's own epsilon rule, not past it (see the module docstring).
    layers = [(Convolution, rule), (nn.Linear, rule)]
    return LayerMapComposite(layer_map=[(BatchNorm, rule)] + layer_map_base() + layers)


def zplus_composite(low, high, epsilon) -> Composite:
    """``zplus``: z+ on the convolutions, z^B on the pixel layer, epsilon on the classifier."""
    layer_map = layer_map_base() + [
        (Convolution, ZPlus()),
        (nn.Linear, Epsilon(epsilon=_or(epsilon, SMALL_EPSILON))),
    ]
    return SpecialFirstLayerMapComposite(
        layer_map=layer_map, first_map=[(Convolution, ZBox(low=low, high=high))]
    )


class DepthComposite(Composite):
    """Rules chosen by depth: z^B on the first convolution, then by the stage a module is in.

    Parameters
    ----------
    pixel, lower, middle, top : zennit Hook
        Rules for the first convolution, convolutions in :data:`LOWER_STAGES`, the other
        convolutions, and linear layers.
    """

    def __init__(self, pixel: Hook, lower: Hook, middle: Hook, top: Hook) -> None:
        self.rules = {"pixel": pixel, "lower": lower, "middle": middle, "top": top}
        self.base = layer_map_base()
        super().__init__(module_map=self._rule_for)

    def _rule_for(self, ctx: dict, name: str, module: nn.Module) -> Hook | None:
        stages = set(name.split("."))
        if stages & set(MIDDLE_STAGES):
            ctx["middle_reached"] = True  # modules come in registration (forward) order
        if isinstance(module, BatchNorm) and ctx.get("middle_reached"):
            # The middle blocks and norm5 sit around epsilon convolutions, which divide by their
            # own output: a BatchNorm there takes the same epsilon rule (an affine layer whose
            # shift absorbs relevance). Below, gamma and z^B need no such care: Pass.
            return self.rules["middle"]
        base = next((hook for types, hook in self.base if isinstance(module, types)), None)
        if base is not None:
            return base
        if isinstance(module, nn.Linear):
            return self.rules["top"]
        if not isinstance(module, Convolution):
            return None
        if not ctx.get("pixel_layer_seen"):
            # Modules come in registration order, so the first convolution is the pixel layer.
            ctx["pixel_layer_seen"] = True
            return self.rules["pixel"]
        return self.rules["lower"] if stages & set(LOWER_STAGES) else self.rules["middle"]


def montavon2019_composite(low, high, epsilon) -> Composite:
    """``montavon2019``: rules by depth (:class:`DepthComposite`, the module docstring)."""
    return DepthComposite(
        pixel=ZBox(low=low, high=high),
        lower=Gamma(gamma=GAMMA),
        middle=Epsilon(epsilon=_or(epsilon, LARGE_EPSILON)),
        top=Epsilon(epsilon=_or(epsilon, ZERO_EPSILON)),
    )


# The builders the registry's LRP entries name (chexlib.methods): (low, high, epsilon) ->
# a fresh composite; epsilon None keeps the composite's own.

def epsilon_composite(low, high, epsilon) -> Composite:
    """``epsilon``: LRP-epsilon (0.25) on every convolution, BatchNorm and the classifier."""
    return _epsilon_everywhere(_or(epsilon, LARGE_EPSILON))


def z_composite(low, high, epsilon) -> Composite:
    """``z``: LRP-0 (epsilon 1e-9) on every convolution, BatchNorm and the classifier."""
    return _epsilon_everywhere(_or(epsilon, ZERO_EPSILON))


def alpha2_beta1_composite(low, high, epsilon) -> Composite:
    """``alpha2_beta1``: zennit's EpsilonAlpha2Beta1."""
    return EpsilonAlpha2Beta1(epsilon=_or(epsilon, SMALL_EPSILON))


def epsilon_plus_flat_composite(low, high, epsilon) -> Composite:
    """``epsilon_plus_flat``: zennit's EpsilonPlusFlat."""
    return EpsilonPlusFlat(epsilon=_or(epsilon, SMALL_EPSILON))


def epsilon_gamma_box_composite(low, high, epsilon) -> Composite:
    """``epsilon_gamma_box``: zennit's EpsilonGammaBox with the input's range and gamma 0.25."""
    return EpsilonGammaBox(low=low, high=high, epsilon=_or(epsilon, SMALL_EPSILON), gamma=GAMMA)
