"""Method and layer names for people: controls, captions and figure titles.

The registry (:mod:`chexlib.methods`) names methods for code (``montavon2019_epsilon_pixels``,
``gradcam-features.denseblock3``); a reader sees ``LRP Montavon 2019, ε on pixels`` and
``Grad-CAM at dense block 3``.
"""

from __future__ import annotations

from chexlib.methods import PASS_SUFFIX

__all__ = ["DISPLAY_NAMES", "LAYER_NAMES", "display_name", "layer_display_name"]

#: How a reader names each registered method (controls, captions, figure titles).
DISPLAY_NAMES: dict[str, str] = {
    "epsilon": "LRP-ε", "z": "LRP-0", "alpha2_beta1": "LRP-α2β1", "zplus": "LRP-z⁺",
    "epsilon_plus_flat": "LRP ε+flat (zennit)", "epsilon_gamma_box": "LRP ε-γ-box (zennit)",
    "montavon2019": "LRP Montavon 2019",
    "montavon2019_epsilon_pixels": "LRP Montavon 2019, ε on pixels",
    "gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "lrp_gradcam": "LRP × Grad-CAM",
    "random": "random map", "gradcam_signed": "Grad-CAM signed (no ReLU)",
}
#: Where a CAM method is computed, in words (the layer names of torchvision's DenseNet-121).
LAYER_NAMES: dict[str, str] = {
    "relu": "the last layer", "features.conv0": "the first convolution",
    "features.norm0": "the first BatchNorm", "features.relu0": "the first ReLU",
    "features.pool0": "the first max pool", "features.norm5": "the last BatchNorm",
}


def display_name(method: str) -> str:
    """A method's name for people: ``"LRP Montavon 2019, ε on pixels"``,
    ``"LRP-α2β1 (BatchNorm kept)"``, ``"Grad-CAM at dense block 3"``; an unknown name as it is."""
    if method in DISPLAY_NAMES:
        return DISPLAY_NAMES[method]
    if method.endswith(PASS_SUFFIX) and method[:-len(PASS_SUFFIX)] in DISPLAY_NAMES:
        return f"{DISPLAY_NAMES[method[:-len(PASS_SUFFIX)]]} (BatchNorm kept)"
    name, _, layer = method.partition("-")
    if name in DISPLAY_NAMES and layer:
        return f"{DISPLAY_NAMES[name]} at {layer_display_name(layer)}"
    return method


def layer_display_name(layer: str) -> str:
    """``features.denseblock3`` -> ``dense block 3``; ``relu`` -> ``last layer``."""
    if layer in LAYER_NAMES:
        return LAYER_NAMES[layer]
    words = layer.removeprefix("features.")
    for prefix, word in (("denseblock", "dense block "), ("transition", "transition ")):
        if words.startswith(prefix):
            return word + words[len(prefix):].replace(".", " ")
    return layer
