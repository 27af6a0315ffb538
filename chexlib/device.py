"""Devices and precision: where a model runs, in which autocast dtype, and how a batch gets there.

Training, prediction and the notebooks, those that train and those that explain, pick their
device with :func:`select_device` (CUDA, then Apple MPS, then the CPU), the mixed precision of
the ``precision`` parameter with :func:`amp_dtype`, the memory format with
:func:`channels_last`, and move batches with :func:`to_device`. Nothing here depends on training.

Why bfloat16 on some CPUs only: CPUs with native bf16 instructions (x86 ``avx512_bf16`` or
``amx_bf16``, Arm ``bf16``) run DenseNet-121's convolutions in bf16 autocast and channels-last
about twice as fast as in float32 (``benchmarks/train_precision.py``); CPUs without them emulate
bf16 and run it *slower* than float32. :func:`cpu_has_native_bf16` therefore reads what the CPU
reports instead of assuming it.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
import warnings
from pathlib import Path

import torch
from torch import nn

from chexlib.errors import ParameterError
from chexlib.params import SCHEMA

__all__ = ["PRECISIONS", "amp_dtype", "autocast_name", "channels_last", "cpu_has_native_bf16",
           "cpuinfo_has_bf16", "inference_format", "is_channels_last", "select_device",
           "to_device"]

#: CPU feature flags (``/proc/cpuinfo``) that mean native bfloat16 arithmetic.
BF16_FLAGS: frozenset[str] = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


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


def cpuinfo_has_bf16(text: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists a native bf16 flag (x86 flags, Arm Features)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features") and BF16_FLAGS & set(value.split()):
            return True
    return False


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this machine's CPU does bfloat16 arithmetic natively.

    Linux: the flags of ``/proc/cpuinfo`` (:func:`cpuinfo_has_bf16`); macOS on Apple silicon:
    ``sysctl hw.optional.arm.FEAT_BF16`` (M2 and later). Anything else, or a failed read, is
    False, so an unknown CPU keeps float32.
    """
    cpuinfo = Path("/proc/cpuinfo")
    try:
        if cpuinfo.exists():
            return cpuinfo_has_bf16(cpuinfo.read_text(errors="replace"))
        if platform.system() == "Darwin":
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], check=False,
                                 capture_output=True, text=True, timeout=5)
            return out.stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False
    return False


#: Values of the ``precision`` parameter.
PRECISIONS: tuple[str, ...] = SCHEMA["precision"].choices


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a device and ``precision``; None means plain float32.

    ``auto`` is bf16 on CUDA cards that support it (no loss scaling needed), fp16 with a gradient
    scaler on older cards, bf16 on CPUs with native bf16 (:func:`cpu_has_native_bf16`), and
    float32 elsewhere (MPS autocast is partial). ``bf16`` forces bf16 on the CPU too, where it is
    slow without native support; ``fp16`` needs CUDA.
    """
    if precision not in PRECISIONS:
        raise ParameterError(f"precision {precision!r} is unknown; expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise ParameterError("precision 'bf16' is not supported by this GPU; use fp16 or auto")
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu":
        if precision == "auto":
            return torch.bfloat16 if cpu_has_native_bf16() else None
        if precision == "bf16":
            if not cpu_has_native_bf16():
                warnings.warn("precision 'bf16' on a CPU without native bf16 is emulated and slow "
                              "(measured: 0.15x the speed of float32, benchmarks/"
                              "train_precision.py); precision auto picks float32 here",
                              RuntimeWarning, stacklevel=2)
            return torch.bfloat16
        raise ParameterError(f"precision {precision!r} needs a CUDA device; this run uses the CPU "
                             "(use auto, fp32 or bf16)")
    if precision == "auto":
        return None
    raise ParameterError(f"precision {precision!r} needs a CUDA device or the CPU; this run uses "
                         f"{device} (use auto or fp32)")


def autocast_name(amp: torch.dtype | None) -> str:
    """The name of an autocast dtype of :func:`amp_dtype`: float32 (None), bfloat16 or float16."""
    return str(amp or torch.float32).removeprefix("torch.")


def channels_last(device: torch.device, amp: torch.dtype | None) -> bool:
    """Whether a model runs channels-last: on CUDA (cuDNN prefers it) and in CPU bf16 (oneDNN's
    bf16 convolutions are fastest in NHWC; in CPU float32 the gain is small and not taken)."""
    return device.type == "cuda" or (device.type == "cpu" and amp == torch.bfloat16)


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's first 4-d weight is stored channels-last."""
    for parameter in model.parameters():
        if parameter.dim() == 4:
            return parameter.is_contiguous(memory_format=torch.channels_last) and not \
                parameter.is_contiguous()
    return False


def to_device(images: torch.Tensor, device: torch.device,
              memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """Move a batch of images, in ``memory_format`` (default: channels-last on CUDA only)."""
    images = images.to(device, non_blocking=True)
    if memory_format is None and device.type == "cuda":
        memory_format = torch.channels_last
    if memory_format is not None:
        images = images.contiguous(memory_format=memory_format)
    return images


@contextlib.contextmanager
def inference_format(model: nn.Module, device: torch.device, precision: str = "auto"):
    """Run ``model`` for inference in the autocast dtype and memory format of ``precision``.

    Yields ``(amp, memory_format)``: the autocast dtype (None: float32) to wrap the forward passes
    in, and the memory format to give their input batches (None: as they are). On the CPU a
    model converted to channels-last here is converted back on exit, so the caller's model
    comes back as it was given (the explanations that follow need it NCHW and float32).
    """
    amp = amp_dtype(device, precision)
    memory_format = torch.channels_last if channels_last(device, amp) else None
    restore = memory_format is not None and device.type == "cpu" and not is_channels_last(model)
    if restore:
        model.to(memory_format=memory_format)
    try:
        yield amp, memory_format
    finally:
        if restore:
            model.to(memory_format=torch.contiguous_format)
