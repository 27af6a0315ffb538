"""Named LRP composites: which zennit rule explains which layer of the DenseNet-121.

A composite maps every layer to an LRP rule (zennit's rules; zennit is a dependency, LGPL, never
copied here). The names below are the variants the notebooks compare; each is one entry of the
registry (:func:`chexlib.methods.register_composite`) that names its builder in this module
(``zplus`` -> :func:`zplus_composite`, ...):

=====================  ========================================================================
``epsilon``            LRP-epsilon on every convolution and the classifier, scale-aware:
                       eps = 0.25 x the root mean square of the layer's output (per image)
``z``                  LRP-0 everywhere (epsilon = 1e-9: only guards against division by zero)
``alpha2_beta1``       LRP-alpha2-beta1 on every convolution, LRP-epsilon (1e-6) on the classifier
``zplus``              Deep-Taylor style: z+ on the convolutions, z^B (ZBox) on the pixel layer,
                       LRP-epsilon (1e-6) on the classifier
``epsilon_plus_flat``  zennit's EpsilonPlusFlat: flat on the pixel layer, z+ on the other
                       convolutions, LRP-epsilon (1e-6) on the classifier
``epsilon_gamma_box``  zennit's EpsilonGammaBox: z^B on the pixel layer, gamma (0.25) on the other
                       convolutions, LRP-epsilon (1e-6) on the classifier; the max pool
                       proportional (:class:`ProportionalMaxPool`)
``montavon2019``       Montavon et al. 2019's recipe by depth (see below)
``montavon2019_``      the same with the scale-aware epsilon instead of z^B on the pixel layer:
``epsilon_pixels``     the series' default (the fewest grid artefacts, see below)
=====================  ========================================================================

Each is explained on the canonized network by default (:mod:`chexlib.explain.canonizers`:
BatchNorms folded into linear layers, whose biases then absorb the shifts' share), or on the
network as it is with the registry's ``<name>-pass`` (:func:`chexlib.explain.lrp.lrp`'s
``batchnorm``).

Every composite also carries zennit's base map: ``Pass`` on ReLUs (and on BatchNorms, which only
the ``-pass`` variants still have), ``Norm`` on average pools (the transitions' 2x2 pools and the
head's global pool). ``torch.cat`` keeps its gradient, exact LRP for it. The thresholded ReLUs
of the canonized network keep their gradient too (pass where active, absorb the baseline's share
elsewhere). The max pool (``pool0``) keeps its gradient, winner-take-all, except where a
composite says otherwise: only about a fifth of ``relu0``'s positions then receive relevance,
one of the sources of the 4 px grid in the maps (:func:`chexlib.heatmap_quality.artefacts.blockiness`).

Remedies for the grid: gamma in the lower layers, and the proportional max-pool rule, which
treats the pool like a sum pool: each output's relevance goes to its window's inputs in
proportion to their values (conservative; for the non-negative inputs after ``relu0`` the
natural LRP treatment of a pooling layer). The usual advice for the pixel layer, z^B (Montavon et
al. 2019) rather than flat (which spreads each first-layer neuron's relevance uniformly over its
7x7 field), did not hold on the canonized network of the trained ``default`` model: z^B's
bound terms follow the stride-2 pattern of ``conv0`` and, measured with
``benchmarks/lrp_artefacts.py`` on 8 images x 14 classes, ``montavon2019`` had blockiness
1.33 / 1.38 at periods 4 / 8, the same recipe with the scale-aware epsilon at the pixels 1.04 /
1.10 (``epsilon_plus_flat``, flat at the pixels: 1.53 / 1.64). So
``montavon2019_epsilon_pixels`` is the series' default. The ratio sees block edges only: a fine
pixel-by-pixel texture from the stride-2 first convolution remains in every composite's maps.

z^B bounds: the real range of each colour channel after ImageNet normalisation
(:data:`INPUT_LOW`, :data:`INPUT_HIGH`, tensors [1, 3, 1, 1]: ``(0 - mean) / std`` and
``(1 - mean) / std`` per channel).

BatchNorm and the epsilon rule (``-pass`` variants only): an epsilon (or LRP-0) rule divides a
neuron's relevance by the neuron's own output, so that relevance must be in proportion to that
output. With ``Pass`` on a BatchNorm whose shift is not zero it is not, and LRP-0 on a random
DenseNet-121 produced maps of 1e25; so ``epsilon-pass`` and ``z-pass`` apply their epsilon rule
to BatchNorms too, and ``montavon2019-pass`` does so from ``denseblock3`` on. The z+,
alpha-beta, gamma and flat rules divide by sums of positive parts and keep ``Pass``.

``montavon2019`` groups DenseNet-121's layers by depth, by module name:

- pixels: the first convolution (``features.conv0``) -> z^B with the input's real range;
- lower: ``pool0``, ``denseblock1``, ``transition1``, ``denseblock2``, ``transition2`` -> the
  proportional max pool, gamma (0.25);
- middle: ``denseblock3``, ``transition3``, ``denseblock4`` -> LRP-epsilon, scale-aware
  (0.25 x the layer's output RMS);
- top: the classifier -> LRP-0 (epsilon 1e-9).

``montavon2019_epsilon_pixels`` takes the middle blocks' scale-aware epsilon for the pixel layer.

Large epsilon absorbs relevance on purpose (``epsilon``, ``montavon2019``'s middle blocks): a
neuron passes on only ``|z| / (|z| + eps)`` of its relevance. A fixed epsilon absorbs a share
that depends on the activations' scale (0.25 kept 0.3-8 % of the logit on the trained default
model, whose activations are small deep in the network); the scale-aware epsilon of zennit's
``Stabilizer(norm_scale=True)`` makes the share the same at every depth and for every model
scale. ``tests/test_explain_lrp.py`` bounds the shares kept; notebook 04 reports them on the
trained model.
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
from zennit.core import Composite, Hook, Stabilizer, stabilize
from zennit.rules import Epsilon, Gamma, ZBox, ZPlus
from zennit.types import BatchNorm, Convolution

from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib import methods
from chexlib.errors import ParameterError
from chexlib.methods import LRP_COMPOSITES

#: The epsilon of "epsilon" and of montavon2019's middle blocks, relative to the root mean square
#: of each layer's output: large on purpose, it keeps only the dominant contributions (sparser,
#: less noisy maps) and absorbs the rest.
LARGE_EPSILON = 0.25
#: LRP-0: epsilon only prevents a division by zero.
ZERO_EPSILON = 1e-9
#: Epsilon on the classifier for the composites that use other rules below it (zennit's default).
SMALL_EPSILON = 1e-6
#: Gamma of the gamma rule (zennit's default, Montavon et al. 2019's example value).
GAMMA = 0.25

#: The real range of each colour channel of an ImageNet-normalised pixel, [1, 3, 1, 1]:
#: (0 - mean) / std and (1 - mean) / std. The z^B rule needs the box inputs live in.
INPUT_LOW: torch.Tensor = torch.tensor(
    [(0.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
INPUT_HIGH: torch.Tensor = torch.tensor(
    [(1.0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)


#: Composites whose rules below the classifier divide by sums of positive parts: with
#: ``batchnorm="pass"`` their BatchNorms take zennit's ``Pass`` rule.
PASS_BATCHNORM = ("alpha2_beta1", "zplus", "epsilon_plus_flat", "epsilon_gamma_box")
#: Composites whose (large) epsilon rule absorbs relevance on purpose.
LARGE_EPSILON_COMPOSITES = ("epsilon", "montavon2019", "montavon2019_epsilon_pixels")

#: montavon2019's depth groups, by the name of the DenseNet-121 stage a module sits in.
LOWER_STAGES = ("pool0", "denseblock1", "transition1", "denseblock2", "transition2")
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
        :data:`INPUT_HIGH`, each colour channel's range of ImageNet-normalised pixels.
    epsilon : float, optional
        Replaces the epsilon of every LRP-epsilon rule in the composite (the classifier's, and the
        convolutions' in ``epsilon`` and ``montavon2019``, where it is the factor of the
        layer's output RMS). Default: the composite's own.

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


def scaled_epsilon(factor: float) -> Stabilizer:
    """A scale-aware epsilon: ``factor`` x the root mean square of the layer's output, per image
    (zennit's ``Stabilizer(norm_scale=True)``), added with the sign of each output."""
    return Stabilizer(epsilon=factor, norm_scale=True)


class ProportionalMaxPool(Hook):
    """LRP for a max pool treated as a sum pool: ``R_i = x_i * sum_j R_j / sum(window_j)``.

    Each output's relevance goes to the inputs of its window in proportion to their values
    instead of all to the maximum (the gradient). Conservative for non-negative inputs (the
    pool follows a ReLU in DenseNet-121). A pool with dilation keeps its gradient.

    Parameters
    ----------
    stabilizer : float
        Guards the division by a window's sum (zennit's sign-aware stabilizer).
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.stabilizer = stabilizer

    def forward(self, module, input, output):
        self.stored_tensors["input"] = input

    def backward(self, module, grad_input, grad_output):
        if module.dilation not in (1, (1, 1)):
            return None  # keep the gradient
        x = self.stored_tensors["input"][0].detach()
        kernel = _pair(module.kernel_size)
        with torch.enable_grad():
            leaf = x.clone().requires_grad_(True)
            # Zero padding: the inputs are non-negative, so padding adds nothing to a window sum.
            sums = nn.functional.avg_pool2d(
                leaf, kernel, module.stride, module.padding, ceil_mode=module.ceil_mode,
                count_include_pad=True) * (kernel[0] * kernel[1])
            ratio = grad_output[0] / stabilize(sums.detach(), self.stabilizer)
            (spread,) = torch.autograd.grad(sums, leaf, grad_outputs=ratio)
        relevance = x * spread
        return tuple(relevance if g.shape == relevance.shape else None for g in grad_input)

    def copy(self) -> "ProportionalMaxPool":
        return ProportionalMaxPool(self.stabilizer)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _epsilon_everywhere(eps: float | Stabilizer) -> Composite:
    rule = Epsilon(epsilon=eps)
    # BatchNorm before the base map's Pass: an epsilon rule divides by the layer's own output, so
    # the relevance it receives must be in proportion to that output, i.e. come through the
    # BatchNorm's own epsilon rule, not past it (see the module docstring).
    layers = [(Convolution, rule), (nn.Linear, rule)]
    # The pools' Norm rule gets the same stabiliser where it is a plain number: with zennit's
    # default (1e-6) LRP-0 would differ from gradient x input by 1e-4 where pooled features are
    # small (measured on a random DenseNet-121).
    base = layer_map_base(eps) if isinstance(eps, float) else layer_map_base()
    return LayerMapComposite(layer_map=[(BatchNorm, rule)] + base + layers)


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
    pool : zennit Hook, optional
        Rule for max pools (default: their gradient).
    """

    def __init__(self, pixel: Hook, lower: Hook, middle: Hook, top: Hook,
                 pool: Hook | None = None) -> None:
        self.rules = {"pixel": pixel, "lower": lower, "middle": middle, "top": top, "pool": pool}
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
        if isinstance(module, nn.MaxPool2d):
            return self.rules["pool"]
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
        middle=Epsilon(epsilon=scaled_epsilon(_or(epsilon, LARGE_EPSILON))),
        top=Epsilon(epsilon=_or(epsilon, ZERO_EPSILON)),
        pool=ProportionalMaxPool(),
    )


def montavon2019_epsilon_pixels_composite(low, high, epsilon) -> Composite:
    """``montavon2019_epsilon_pixels``: :func:`montavon2019_composite` with the scale-aware
    epsilon rule instead of z^B on the pixel layer (the module docstring: z^B stamps the first
    convolution's stride on the canonized network's maps)."""
    return DepthComposite(
        pixel=Epsilon(epsilon=scaled_epsilon(_or(epsilon, LARGE_EPSILON))),
        lower=Gamma(gamma=GAMMA),
        middle=Epsilon(epsilon=scaled_epsilon(_or(epsilon, LARGE_EPSILON))),
        top=Epsilon(epsilon=_or(epsilon, ZERO_EPSILON)),
        pool=ProportionalMaxPool(),
    )


# The builders the registry's LRP entries name (chexlib.methods): (low, high, epsilon) ->
# a fresh composite; epsilon None keeps the composite's own.

def epsilon_composite(low, high, epsilon) -> Composite:
    """``epsilon``: scale-aware LRP-epsilon (0.25 x output RMS) on every convolution and the
    classifier (and BatchNorm, in ``epsilon-pass``)."""
    return _epsilon_everywhere(scaled_epsilon(_or(epsilon, LARGE_EPSILON)))


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
    """``epsilon_gamma_box``: zennit's EpsilonGammaBox with the input's range, gamma 0.25, and
    the proportional max pool."""
    return EpsilonGammaBox(low=low, high=high, epsilon=_or(epsilon, SMALL_EPSILON), gamma=GAMMA,
                           layer_map=[(nn.MaxPool2d, ProportionalMaxPool())])
