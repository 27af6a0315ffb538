"""Names of the explanation methods, without importing torch or zennit.

Parameters, the heatmap store and the notebooks refer to methods by these names; the modules
that compute them (:mod:`chexlib.explain.composites`, ...) take their lists from here.
"""

from __future__ import annotations

#: The LRP composites, each with a one-line description (details in
#: :mod:`chexlib.explain.composites`). Order: the study's variants first, then zennit's
#: composites, then Montavon et al. 2019's recipe.
LRP_COMPOSITES: dict[str, str] = {
    "epsilon": "LRP-epsilon (eps=0.25) on convolutions, BatchNorms and the classifier",
    "z": "LRP-0 (eps=1e-9) on convolutions, BatchNorms and the classifier",
    "alpha2_beta1": "LRP-alpha2-beta1 on convolutions, LRP-epsilon on the classifier",
    "zplus": "Deep-Taylor style: z+ on convolutions, z^B on the pixel layer, epsilon on top",
    "epsilon_plus_flat": "zennit EpsilonPlusFlat: flat on pixels, z+ on convolutions, epsilon on top",
    "epsilon_gamma_box": "zennit EpsilonGammaBox: z^B on pixels, gamma on convolutions, epsilon on top",
    "montavon2019": "Montavon 2019: z^B pixels, gamma lower, epsilon middle, LRP-0 classifier",
}

#: The class-activation-map methods (:mod:`chexlib.explain.cam`).
CAM_METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM: channel weights = spatially averaged gradients of the class logit",
    "gradcam_pp": "Grad-CAM++: channel weights = pixel-weighted positive gradients",
}

#: Combinations of methods (:mod:`chexlib.explain.combined`).
COMBINED_METHODS: dict[str, str] = {
    "lrp_gradcam": "LRP (epsilon_plus_flat) gated by the normalised Grad-CAM map of the class",
}

#: DenseNet-121's convolutional stages a CAM can look at, by module name, input to output; the
#: last, the head's ReLU (the rectified final feature maps), is the default.
CAM_LAYERS: tuple[str, ...] = tuple(
    f"features.{stage}" for stage in (
        "conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2",
        "transition2", "denseblock3", "transition3", "denseblock4", "norm5")
) + ("relu",)


def cam_method_name(method: str = "gradcam", layer: str = "relu") -> str:
    """The heatmap-store name of a CAM method on a layer: ``gradcam`` for the default layer,
    ``gradcam-features.denseblock3`` for another."""
    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(CAM_METHODS)}")
    return method if layer == CAM_LAYERS[-1] else f"{method}-{layer}"
