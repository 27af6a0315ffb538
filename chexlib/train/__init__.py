"""Train DenseNet-121 on CheXpert-format data: in a notebook, from the command line, under torchrun.

``chexlib.train.loop``         the training loop (:func:`fit`), prediction, devices and precision
``chexlib.train.distributed``  torchrun's process group, DDP, the sharded batch sampler
``chexlib.train.launch``       a run's data and model from its parameters; in-process or torchrun
``python -m chexlib.train``    the command line (``--params FILE.yaml``), see ``__main__``
"""

from chexlib.train.loop import (
    BEST,
    HISTORY,
    LAST,
    PRECISIONS,
    TrainConfig,
    TrainResult,
    amp_dtype,
    epoch_batches,
    fit,
    masked_bce,
    positive_weights,
    predict,
    select_device,
    train_step,
)

__all__ = [
    "BEST", "HISTORY", "LAST", "PRECISIONS", "TrainConfig", "TrainResult", "amp_dtype",
    "epoch_batches", "fit", "masked_bce", "positive_weights", "predict", "select_device",
    "train_step",
]
