"""Devices and precision: where a model runs, in which autocast dtype, and how a batch gets there.

Training, prediction and the notebooks, those that train and those that explain, pick their
device with :func:`select_device` (CUDA, then Apple MPS, then the CPU), the mixed precision of
the ``precision`` parameter with :func:`amp_dtype`, and move batches with :func:`to_device`
(channels-last on CUDA). Nothing here depends on training.
"""

from __future__ import annotations

import torch

from chexlib.errors import ParameterError
from chexlib.params import SCHEMA

__all__ = ["PRECISIONS", "amp_dtype", "select_device", "to_device"]


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; other names are checked."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(k for k in ("cuda", "mps", "cpu") if available[k]))
    if name not in available:
        raise ParameterError(f"device {name!r} is unknown; expected auto, cpu, cuda or mps")
    if not available[name]:
        raise ParameterError(f"device {name!r} is not available on this machine; use auto or cpu")
    return torch.device(name)


#: Values of the ``precision`` parameter.
PRECISIONS: tuple[str, ...] = SCHEMA["precision"].choices


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a device and ``precision``; None means plain float32.

    ``auto`` is bf16 on CUDA cards that support it (no loss scaling needed), fp16 with a gradient
    scaler on older cards, and float32 elsewhere: CPU autocast speeds up little and MPS's is
    partial.
    """
    if precision not in PRECISIONS:
        raise ParameterError(f"precision {precision!r} is unknown; expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise ParameterError(f"precision {precision!r} needs a CUDA device; this run uses {device}")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ParameterError("precision 'bf16' is not supported by this GPU; use fp16 or auto")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images; channels-last on CUDA, where cuDNN's convolutions prefer it."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images
