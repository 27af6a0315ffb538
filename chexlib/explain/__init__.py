"""chexlib.explain: explanations of the DenseNet-121's predictions.

``chexlib.explain.inputs``        the explainable copy of a model, class names, checked inputs
``chexlib.explain.canonizers``    DenseNet-121 with every BatchNorm merged into a linear layer
``chexlib.explain.composites``    named LRP composites (zennit rules per layer)
``chexlib.explain.lrp``           LRP maps of many classes from one forward pass
``chexlib.explain.shared_forward`` the rules' class-independent work, once per forward pass
``chexlib.explain.conservation``  where relevance goes: map sums vs logits and biases
``chexlib.explain.cam``           the class-activation-map algorithm (one forward, all classes)
``chexlib.explain.gradcam``       Grad-CAM;  ``chexlib.explain.gradcam_pp``  Grad-CAM++
``chexlib.explain.combined``      LRP gated by Grad-CAM
``chexlib.explain.baseline``      the random map (the comparison's chance level)
``chexlib.explain.dispatch``      any method of the registry (:mod:`chexlib.methods`) by name
``chexlib.explain.store``         the heatmap store of a run folder (float16 per method and image)
``chexlib.explain.reported_maps`` a run's reported images by method name: the galleries' explain
                                  callable, filling the heatmap store
"""

from chexlib.explain.baseline import random_maps
from chexlib.explain.canonizers import canonize_densenet
from chexlib.explain.cam import DEFAULT_LAYER, layer_names
from chexlib.explain.combined import lrp_gradcam
from chexlib.explain.composites import (
    LRP_COMPOSITES,
    PASS_BATCHNORM,
    lrp_composites,
    make_composite,
)
from chexlib.explain.conservation import conservation_table, lrp0_bias_shares, relevance_shares
from chexlib.explain.dispatch import explain, method_names
from chexlib.explain.gradcam import GradCAM, gradcam
from chexlib.explain.gradcam_pp import GradCAMPlusPlus, gradcam_pp
from chexlib.explain.inputs import class_indices, explainable_copy
from chexlib.explain.lrp import lrp
from chexlib.explain.store import CorruptMapError, MapNotFoundError, MapStore, MapStoreError

__all__ = ["DEFAULT_LAYER", "LRP_COMPOSITES", "PASS_BATCHNORM", "CorruptMapError", "GradCAM", "GradCAMPlusPlus",
           "MapNotFoundError", "MapStore", "MapStoreError", "canonize_densenet",
           "class_indices", "conservation_table", "explain", "explainable_copy", "gradcam",
           "gradcam_pp", "layer_names", "lrp", "lrp_composites", "lrp_gradcam", "make_composite",
           "lrp0_bias_shares", "method_names", "random_maps", "relevance_shares"]
