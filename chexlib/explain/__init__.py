"""chexlib.explain: explanations of the DenseNet-121's predictions.

``chexlib.explain.composites``  named LRP composites (zennit rules per layer)
``chexlib.explain.lrp``         LRP maps of many classes from one forward pass
``chexlib.explain.store``       the heatmap store of a run folder (float16 per method and image)
"""

from chexlib.explain.composites import LRP_COMPOSITES, lrp_composites, make_composite
from chexlib.explain.lrp import explainable_copy, lrp
from chexlib.explain.store import CorruptMapError, MapNotFoundError, MapStore, MapStoreError

__all__ = ["LRP_COMPOSITES", "CorruptMapError", "MapNotFoundError", "MapStore", "MapStoreError",
           "explainable_copy", "lrp", "lrp_composites", "make_composite"]
