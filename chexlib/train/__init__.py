"""Train DenseNet-121 on CheXpert-format data: in a notebook, from the command line, under torchrun.

``chexlib.train.loop``         the training loop (:func:`fit`), prediction, devices and precision
``chexlib.train.distributed``  torchrun's process group, DDP, the sharded batch sampler
``chexlib.train.launch``       a run's data and model from its parameters; in-process or torchrun
``python -m chexlib.train``    the command line (``--params FILE.yaml``), see ``__main__``

The names below are imported from :mod:`chexlib.train.loop` on first use (PEP 562), so that
``python -m chexlib.train`` checks its parameters before it spends seconds importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BEST", "HISTORY", "LAST", "PRECISIONS", "TrainConfig", "TrainResult", "amp_dtype",
    "epoch_batches", "fit", "masked_bce", "positive_weights", "predict", "select_device",
    "train_step",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("chexlib.train.loop"), name)
    raise AttributeError(f"module 'chexlib.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
