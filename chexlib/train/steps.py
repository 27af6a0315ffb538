"""One optimisation step of the study's recipe: the epoch's batches, the loss and the step.

:func:`epoch_batches` fixes the order of an epoch's images by ``(seed, epoch)``, so a resumed run
sees the same batches as an uninterrupted one; :func:`masked_bce` is the binary cross-entropy on
logits that leaves out the entries the uncertainty policy masks (optionally weighted by
:func:`positive_weights`); :func:`train_step` takes one optimisation step on it, alone or as one
process of a DistributedDataParallel job.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["epoch_batches", "masked_bce", "positive_weights", "train_step"]


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  min_size: int = 2) -> list[list[int]]:
    """The mini-batches of one epoch: positions 0..n-1 in an order fixed by ``(seed, epoch)``.

    A last batch smaller than ``min_size`` is dropped: BatchNorm cannot normalise one sample in
    training mode (with ``P`` processes each needs two, so training passes ``min_size = 2P``).
    """
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < min_size and len(batches) > 1:
        batches.pop()
    return batches


def positive_weights(targets: np.ndarray, masks: np.ndarray, cap: float = 100.0) -> torch.Tensor:
    """Per-class ``negatives / positives`` among the entries that count, capped (for rare classes)."""
    pos = (targets * masks).sum(axis=0)
    neg = ((1 - targets) * masks).sum(axis=0)
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(ratio, 1.0, cap), dtype=torch.float32)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
               pos_weight: torch.Tensor | None = None,
               denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits, averaged over the entries whose mask is 1.

    ``denominator`` replaces ``masks.sum()``: a process holding part of a global batch divides
    by the global batch's count, so that the sum over the processes is the global mean.
    """
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits, targets, reduction="none", pos_weight=pos_weight)
    if denominator is None:
        denominator = masks.sum()
    return (loss * masks).sum() / denominator.clamp_min(1.0)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: torch.Tensor, masks: torch.Tensor, *, amp: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, pos_weight: torch.Tensor | None = None,
               denominator: torch.Tensor | None = None, world_size: int = 1) -> float:
    """One optimisation step; returns this process's share of the batch's mean loss.

    Under DDP, which averages gradients over the ``world_size`` processes, each process's loss is
    its images' masked sum over the *global* batch's ``denominator``, times ``world_size``: the
    averaged gradient is then the gradient of the global batch's mean loss, whatever the split.
    """
    device = images.device
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits = net(images)
    share = masked_bce(logits.float(), targets, masks, pos_weight, denominator)
    loss = share * world_size if world_size != 1 else share
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return share.item()
