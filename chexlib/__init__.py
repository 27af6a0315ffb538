"""chexlib: explain multi-label chest-radiograph predictions with LRP and Grad-CAM.

The package behind the chexlib notebook series. One concept per module:

``chexlib.observations``  the 14 CheXpert observations and the uncertainty policies
``chexlib.data``          CheXpert-format labels, splits, the torch Dataset and image cache
``chexlib.masks``         ground-truth masks in CheXlocalize's JSON / COCO-RLE format
``chexlib.phantom``       a synthetic CheXpert-format data set with masks and a planted shortcut
``chexlib.params``        the parameter schema shared by every notebook
``chexlib.runner``        runs the notebook series with papermill into a run folder
``chexlib.plots``         figures shared by the notebooks
"""

__version__ = "0.1.0"

from chexlib.observations import (  # noqa: E402
    COMPETITION_OBSERVATIONS,
    OBSERVATIONS,
    UNCERTAINTY_POLICIES,
)

__all__ = ["OBSERVATIONS", "COMPETITION_OBSERVATIONS", "UNCERTAINTY_POLICIES", "__version__"]
