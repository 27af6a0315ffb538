"""Benchmark and check of the GPU path: training images/s, all-class LRP and Grad-CAM at 224 px.

A short prepared script for a GPU machine (it also runs on a CPU, where only the float32 rows
apply). On a random-weight DenseNet-121 with random BatchNorm statistics and random images:

Training (``chexlib.train.train_step``, Adam, 14-class masked BCE), images/s:

- baseline: float32, NCHW — what a plain PyTorch loop does;
- chexlib's GPU path: autocast to bf16 (fp16 + gradient scaler on cards without bf16) and
  channels-last, as :func:`chexlib.train.fit` trains on CUDA.

Explanations, images/s, all 14 classes per image, float32 (relevance needs float32's range):
``chexlib.explain.lrp`` (the series' composite, BatchNorms folded) and ``chexlib.explain.gradcam`` (head ReLU),
each against a plain ``torch.no_grad`` forward pass in the same run.

Checks (exit status 1 if one fails): the mixed-precision training loss stays within 2 % of the
float32 loss on the same first batch; on a GPU, LRP and Grad-CAM maps agree with the CPU's
(relative max difference < 1e-3, Grad-CAM normalised by its maximum) — the device-dependence that
explainability.md warns about for pytorch-grad-cam.

Usage::

    python benchmarks/gpu_throughput.py [--size 224] [--batch 64] [--explain-batch 16]
                                        [--steps 20] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from chexlib.device import amp_dtype, select_device
from chexlib.explain import explainable_copy, gradcam, lrp
from chexlib.model import densenet121
from chexlib.train import train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support.py
from support import random_batchnorm  # noqa: E402

NUM_CLASSES = 14


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn, repeat: int) -> tuple[object, float]:
    """``fn``'s last result and its fastest wall time over ``repeat`` calls (after one warm-up)."""
    result = fn()
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return result, min(times)


def model_on(device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = densenet121(num_classes=NUM_CLASSES, weights="none")
    random_batchnorm(model, torch.Generator().manual_seed(1), scale=False)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def batch_on(device: torch.device, batch: int, size: int, channels_last: bool = False):
    gen = torch.Generator().manual_seed(2)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    targets = (torch.rand(batch, NUM_CLASSES, generator=gen) > 0.7).float().to(device)
    masks = torch.ones(batch, NUM_CLASSES, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets, masks


def training(device, size, batch, steps, amp, channels_last) -> dict:
    """Images/s of ``steps`` training steps, the first step's loss and peak GPU memory."""
    model = model_on(device, channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    images, targets, masks = batch_on(device, batch, size, channels_last)
    first = train_step(model, optimizer, images, targets, masks, amp=amp, scaler=scaler)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, images, targets, masks, amp=amp, scaler=scaler)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"images_per_s": steps * batch / seconds, "first_loss": first, "peak_mib": peak}


def explanations(device, size, batch, repeat) -> dict:
    """Images/s of a forward pass, all-class LRP and all-class Grad-CAM, and the maps."""
    model = explainable_copy(model_on(device)).eval()
    images, _, _ = batch_on(device, batch, size)

    def forward():
        with torch.no_grad():
            return model(images)

    _, t_forward = timed(device, forward, repeat)
    folded = explainable_copy(model, "fold")  # canonized once, outside the timing
    lrp_maps, t_lrp = timed(device, lambda: lrp(folded, images), repeat)
    cam_maps, t_cam = timed(device, lambda: gradcam(model, images), repeat)
    return {"forward": batch / t_forward, "lrp": batch / t_lrp, "gradcam": batch / t_cam,
            "maps": (lrp_maps.float().cpu(), cam_maps.float().cpu())}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=None, help="training batch (GPU 64, CPU 8)")
    parser.add_argument("--explain-batch", type=int, default=None, help="(GPU 16, CPU 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (GPU 20, CPU 3)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (64 if gpu else 8)
    explain_batch = args.explain_batch or (16 if gpu else 4)
    steps = args.steps or (20 if gpu else 3)
    card = torch.cuda.get_device_name(device) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {card}; torch {torch.__version__}; {args.size} px")
    failures = []
    report: dict = {"device": card, "torch": torch.__version__, "size": args.size}

    base = training(device, args.size, batch, steps, None, False)
    report["train_fp32"] = base
    memory = f", peak {base['peak_mib']:.0f} MiB" if gpu else ""
    print(f"training fp32 NCHW, batch {batch}: {base['images_per_s']:.1f} images/s{memory}")
    amp = amp_dtype(device, "auto")
    if amp is not None:
        fast = training(device, args.size, batch, steps, amp, True)
        report["train_amp_channels_last"] = fast | {"dtype": str(amp)}
        ratio = fast["images_per_s"] / base["images_per_s"]
        report["train_speedup"] = ratio
        # Peak memory is measured on CUDA only (None on a CPU with native bf16).
        memory = f", peak {fast['peak_mib']:.0f} MiB" if fast["peak_mib"] is not None else ""
        print(f"training {amp} + channels-last: {fast['images_per_s']:.1f} images/s "
              f"({ratio:.2f}x float32){memory}")
        drift = abs(fast["first_loss"] - base["first_loss"]) / abs(base["first_loss"])
        report["amp_loss_drift"] = drift
        if drift > 0.02:
            failures.append(f"mixed-precision loss differs from float32 by {drift:.1%}")
    else:
        print("training with mixed precision: not applicable on this device (float32 only)")

    ex = explanations(device, args.size, explain_batch, args.repeat)
    lrp_maps, cam_maps = ex.pop("maps")
    report["explain"] = ex
    print(f"all 14 classes, batch {explain_batch}: forward {ex['forward']:.1f} images/s, "
          f"LRP {ex['lrp']:.1f} images/s ({ex['forward'] / ex['lrp']:.1f}x a forward pass), "
          f"Grad-CAM {ex['gradcam']:.1f} images/s ({ex['forward'] / ex['gradcam']:.2f}x)")
    if gpu:
        cpu = explanations(torch.device("cpu"), args.size, explain_batch, repeat=0)["maps"]
        report["lrp_gpu_vs_cpu"] = relative_difference(lrp_maps, cpu[0])
        report["gradcam_gpu_vs_cpu"] = relative_difference(cam_maps, cpu[1])
        print(f"maps, GPU vs CPU: LRP {report['lrp_gpu_vs_cpu']:.1e}, "
              f"Grad-CAM {report['gradcam_gpu_vs_cpu']:.1e} (relative max difference)")
        for name in ("lrp_gpu_vs_cpu", "gradcam_gpu_vs_cpu"):
            if not report[name] < 1e-3:
                failures.append(f"{name} = {report[name]:.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    for failure in failures:
        print(f"CHECK FAILED: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
