"""Train DenseNet-121 on CheXpert-format data: in a notebook, from the command line, under torchrun.

``chexlib.train.loop``          the training loop (:func:`fit`): validation, best and last
                                checkpoints, resume
``chexlib.train.config``        ``TrainConfig`` (what determines the weights), ``TrainResult``
``chexlib.train.steps``         an epoch's batches, the masked loss, one optimisation step
``chexlib.train.prediction``    :func:`predict`: logits and probabilities of a dataset
``chexlib.train.resume``        resume points: saving the training state, resuming or not
``chexlib.train.out_of_memory`` the error for a batch that does not fit in GPU memory
``chexlib.train.distributed``   torchrun's process group, DDP, the sharded batch sampler
``chexlib.train.launch``        a run's data and model from its parameters; in-process or torchrun
``python -m chexlib.train``     the command line (``--params FILE.yaml``), see ``__main__``

Devices and precision (:func:`select_device`, :func:`amp_dtype`, ``PRECISIONS``) are
:mod:`chexlib.device`'s, re-exported here. The names below are imported from their modules on
first use (PEP 562), so that ``python -m chexlib.train`` checks its parameters before it spends
seconds importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Where each name of the package is defined.
_HOMES = {
    "PRECISIONS": "chexlib.device",
    "TrainConfig": "chexlib.train.config",
    "TrainResult": "chexlib.train.config",
    "amp_dtype": "chexlib.device",
    "epoch_batches": "chexlib.train.steps",
    "fit": "chexlib.train.loop",
    "masked_bce": "chexlib.train.steps",
    "positive_weights": "chexlib.train.steps",
    "predict": "chexlib.train.prediction",
    "select_device": "chexlib.device",
    "train_step": "chexlib.train.steps",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'chexlib.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
