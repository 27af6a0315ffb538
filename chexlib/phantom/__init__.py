"""A phantom CheXpert data set: real label statistics, synthetic radiographs, known ground truth.

Real CheXpert cannot be redistributed, so chexlib generates a stand-in that runs on a laptop:

* labels are whole real patients sampled from CheXpert's own ``train.csv`` (shipped by
  torchxrayvision), so marginals, co-occurrences and studies per patient are the real ones;
* each image is a synthetic frontal chest radiograph whose lungs have the outline of a real lung
  mask, with every positive finding drawn where a radiologist would look for it and a
  ground-truth mask in CheXlocalize's format;
* a "PORTABLE" marker is burned into most AP films (and few PA films) as a planted shortcut with
  its own mask, and a chest drain can be drawn on a chosen share of the pneumothorax images as a
  planted confounder, also with its own mask; every image can be rendered again without them
  (``counterfactual``).

Modules, one concept each:

``sampling``  real-row and patient sampling, drawn / reported labels, label noise, shortcut, drain
``lungs``     the real lung shapes (torchxrayvision's masks), read once and cached
``anatomy``   patient habitus, study technique, lungs, heart, mediastinum, diaphragm, body
``skeleton``  ribs, clavicles, spine, scapulae
``vessels``   pulmonary vascular markings
``findings``  one drawing function per observation and the registry FINDINGS
``devices``   support devices and rib fractures
``drain``     the planted chest drain, drawn last from its own random stream
``render``    composition, exposure, noise and the planted marker
``generate``  orchestration: process pool, atomic files, phantom.json
``counterfactual``  the same stored image rendered again, with or without its confounders

Use :func:`generate` or ``python -m chexlib.phantom --out DIR``.
"""

from chexlib.phantom.generate import generate

__all__ = ["generate"]
