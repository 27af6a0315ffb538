"""Benchmark: chexlib's batched region perturbation vs Quantus's PixelFlipping, same curves.

On a random-weight chexlib DenseNet-121 (random BatchNorm statistics), the same images, maps and
classes (one class per image, different across images):

- chexlib: :func:`chexlib.heatmap_quality.region_perturbation`, MoRF, zero fill, ``steps`` steps: all
  ``N * (steps + 1)`` perturbed images in forward passes of ``--batch-size``;
- Quantus, region by region: ``PixelFlipping`` removing one ``patch`` x ``patch`` region per step
  (``features_in_step = 3 * patch^2``: Samek et al.'s protocol, R steps of N images); its curve
  contains chexlib's, which is compared at chexlib's ``steps`` points;
- Quantus, same points: ``PixelFlipping`` removing ``R / steps`` regions per step, the very same
  ``steps`` points (the same number of perturbed images: the equal-work comparison);
- floor: plain forward passes of ``N * (steps + 1)`` images in chunks of ``--batch-size``.

The curves coincide because every map is constant inside each region with distinct values across
regions, Quantus's baseline is the constant 0 (``perturb_baseline=0.0``, chexlib's ``"zero"``),
it returns logits (``softmax=False``) and does not normalise the maps. Quantus requires
``features_in_step`` to divide H * W while its features count the 3 channels, so H * W must be
a multiple of 3 (48 px, not 64 px) and ``steps`` a multiple of 3.

Requirement checked: chexlib at least 10x faster than Quantus region by region, curves equal
within 1e-4 (float32 forward passes of differently composed batches). The speed-up comes from
evaluating ``steps + 1`` points instead of R; at equal work (Quantus, same points) Quantus also
batches its N images per step and the model dominates, so that ratio is reported, not required.

Usage::

    python benchmarks/faithfulness_vs_quantus.py [--size 48] [--images 8] [--patch 2]
        [--steps 24] [--repeat 3] [--threads 1]

The defaults (2 px regions at 48 px: 24 x 24 = 576 regions, as 9 px regions at 224 px) take
about a minute on one core, most of it Quantus region by region.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from chexlib.heatmap_quality import region_perturbation
from chexlib.model import densenet121

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support.py
from support import random_batchnorm  # noqa: E402

NUM_CLASSES = 14
TOLERANCE = 1e-4
REQUIRED_SPEED_UP = 10.0


def build(size: int, count: int, patch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor,
                                                      list[int]]:
    """Model, images [N, 3, H, W], region-constant maps [N, H, W], one class per image."""
    torch.manual_seed(0)
    model = densenet121(num_classes=NUM_CLASSES, weights="none")
    gen = torch.Generator().manual_seed(1)
    random_batchnorm(model, gen, scale=False)
    images = torch.randn(count, 3, size, size, generator=gen)
    side = size // patch
    coarse = torch.randperm(count * side * side, generator=gen).float().reshape(count, side, side)
    maps = coarse.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    classes = [i % NUM_CLASSES for i in range(count)]
    return model.eval(), images, maps, classes


def best_of(repeat: int, fn) -> tuple[object, float]:
    """The result and the fastest of ``repeat`` wall times (the least disturbed run)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, min(times)


def quantus_curves(quantus, model, images, maps, classes, features_in_step: int) -> np.ndarray:
    """Quantus PixelFlipping curves [N, steps] (no unperturbed column), logits, zero baseline."""
    metric = quantus.PixelFlipping(features_in_step=features_in_step, perturb_baseline=0.0,
                                   normalise=False, abs=False, disable_warnings=True)
    curves = metric(model=model, x_batch=images.numpy(), y_batch=np.array(classes),
                    a_batch=maps[:, None].numpy(), channel_first=True, softmax=False,
                    device="cpu", batch_size=len(images))
    return np.asarray(curves, dtype=np.float64)


def forward_floor(model, images, steps: int, batch_size: int) -> None:
    """Plain forward passes of as many images as chexlib evaluates, in the same chunks."""
    total = len(images) * (steps + 1)
    stack = images.repeat(steps + 1, 1, 1, 1)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            model(stack[start:start + batch_size])


def check_args(args) -> str | None:
    """Why the settings cannot give identical curves in Quantus, or None."""
    if args.size % args.patch:
        return "--size must be a multiple of --patch"
    regions = (args.size // args.patch) ** 2
    if regions % args.steps or args.steps % 3 or regions % 3:
        return (f"R = {regions} regions: need R % steps == 0 and steps % 3 == 0 (Quantus's "
                "features_in_step must divide H * W while its features count 3 channels)")
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--patch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    problem = check_args(args)
    if problem:
        print(f"FAIL: {problem}")
        return 1
    import quantus  # optional (the test extra), slow to import: only when run

    torch.set_num_threads(args.threads)
    model, images, maps, classes = build(args.size, args.images, args.patch)
    regions = (args.size // args.patch) ** 2
    per_step = regions // args.steps
    ours, t_ours = best_of(args.repeat, lambda: region_perturbation(
        model, images, maps, classes, patch=args.patch, steps=args.steps, fill="zero",
        batch_size=args.batch_size))
    _, t_floor = best_of(args.repeat, lambda: forward_floor(model, images, args.steps,
                                                            args.batch_size))
    fine, t_fine = best_of(1, lambda: quantus_curves(quantus, model, images, maps, classes,
                                                     3 * args.patch**2))
    same, t_same = best_of(args.repeat, lambda: quantus_curves(
        quantus, model, images, maps, classes, 3 * args.patch**2 * per_step))
    shared = np.arange(1, args.steps + 1) * per_step - 1  # fine-curve columns at our points
    diff_fine = np.abs(ours[:, 1:] - fine[:, shared]).max()
    diff_same = np.abs(ours[:, 1:] - same).max()
    n = args.images
    rows = [
        ("chexlib region_perturbation", n * (args.steps + 1), t_ours, None, None),
        (f"Quantus, 1 region/step ({regions} steps)", n * regions, t_fine, t_fine / t_ours,
         diff_fine),
        (f"Quantus, {per_step} regions/step ({args.steps} steps)", n * args.steps, t_same,
         t_same / t_ours, diff_same),
        ("floor: plain forward passes", n * (args.steps + 1), t_floor, None, None),
    ]
    ok = t_fine / t_ours >= REQUIRED_SPEED_UP and max(diff_fine, diff_same) <= TOLERANCE
    print(f"DenseNet-121 (random weights), {n} images at {args.size} px, patch {args.patch} "
          f"(R = {regions}), MoRF, zero fill, {args.steps} steps, batch {args.batch_size}, "
          f"cpu, {args.threads} thread(s); chexlib and short runs best of {args.repeat}")
    print(f"{'run':<40}{'images fwd':>11}{'time (s)':>10}{'speed-up':>10}{'max |diff|':>12}")
    for name, images_forwarded, seconds, speed_up, diff in rows:
        ratio = "" if speed_up is None else f"{speed_up:.1f}x"
        gap = "" if diff is None else f"{diff:.1e}"
        print(f"{name:<40}{images_forwarded:>11}{seconds:>10.2f}{ratio:>10}{gap:>12}")
    print(f"chexlib / floor: {t_ours / t_floor:.2f}; forward passes: "
          f"{math.ceil(n * (args.steps + 1) / args.batch_size)}")
    print(f"requirements: speed-up vs Quantus region by region >= {REQUIRED_SPEED_UP:g}x, "
          f"max |diff| <= {TOLERANCE:g}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
