"""Prediction: the logits and probabilities of every item of a dataset, in dataset order.

:func:`predict` runs the model in eval mode, without gradients, in the autocast dtype of the
``precision`` parameter (:func:`chexlib.device.amp_dtype`; in bf16 also channels-last); training validates with it every
epoch and notebook 03 scores the reported split with it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from chexlib.device import inference_format, to_device
from chexlib.progress import progress_bar
from chexlib.train.out_of_memory import _out_of_memory

__all__ = ["predict"]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 64,
            device: torch.device | str = "cpu", num_workers: int = 0,
            progress: bool = False, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Logits and probabilities of every item of a dataset.

    Returns
    -------
    logits, probs : ndarray float32, shape [N, C]
        In dataset order.
    """
    device = torch.device(device)
    model.eval().to(device)
    with inference_format(model, device, precision) as (amp, fast_format):
        logits = _logits(model, dataset, batch_size, device, num_workers, progress, precision,
                         amp, fast_format)
    return logits, 1.0 / (1.0 + np.exp(-logits))


def _logits(model, dataset, batch_size, device, num_workers, progress, precision, amp,
            fast_format) -> np.ndarray:
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, *_ in progress_bar(loader, desc="predicting", disable=not progress, leave=False):
        try:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out.append(model(to_device(images, device, fast_format)).float().cpu())
        except torch.cuda.OutOfMemoryError as exc:
            raise _out_of_memory("prediction", exc, len(images), batch_size, precision,
                                 how="batch_size={}") from exc
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
