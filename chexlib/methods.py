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
