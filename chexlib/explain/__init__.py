"""chexlib.explain: explanations of the DenseNet-121's predictions.

``chexlib.explain.store``  the heatmap store of a run folder (float16 per method and image)

LRP (zennit composites) and Grad-CAM land here with their issues.
"""

from chexlib.explain.store import CorruptMapError, MapNotFoundError, MapStore, MapStoreError

__all__ = ["CorruptMapError", "MapNotFoundError", "MapStore", "MapStoreError"]
