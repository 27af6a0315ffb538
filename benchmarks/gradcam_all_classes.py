"""Benchmark: Grad-CAM for all 14 classes from one forward pass vs pytorch-grad-cam per class.

On a random-weight DenseNet-121 (random BatchNorm statistics), the same images:

- chexlib: :func:`chexlib.explain.gradcam`, all 14 classes, the head's ReLU (and, second, a
  transition layer, for which the backward pass is longer);
- reference: ``pytorch_grad_cam.GradCAM`` on the same layer module, one call per class (its way:
  a forward and a backward pass each);
- baseline: one plain forward pass (``torch.no_grad``) of the same model.

Requirements checked: chexlib at least 10x faster than the reference and within 2x a forward pass
(default layer). Maps are compared after pytorch-grad-cam's own post-processing.

Usage::

    python benchmarks/gradcam_all_classes.py [--size 224] [--batch 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from chexlib.explain import explainable_copy, gradcam
from chexlib.model import densenet121

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support.py
from support import random_batchnorm  # noqa: E402

NUM_CLASSES = 14


def build(size: int, batch: int, device: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = densenet121(num_classes=NUM_CLASSES, weights="none")
    gen = torch.Generator().manual_seed(1)
    random_batchnorm(model, gen, scale=False)
    images = torch.randn(batch, 3, size, size, generator=gen)
    return explainable_copy(model).to(device), images.to(device)


def best_of(repeat: int, fn) -> tuple[object, float]:
    """The result and the fastest of ``repeat`` wall times (the least disturbed run)."""
    times, result = [], None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return result, min(times)


def reference_maps(net: nn.Module, images: torch.Tensor, layer: str):
    graph_net = explainable_copy(net).requires_grad_(True)  # pytorch-grad-cam needs a graph
    module = dict(graph_net.named_modules())[layer]
    with ReferenceGradCAM(model=graph_net, target_layers=[module]) as cam:
        return torch.stack([
            torch.from_numpy(cam(input_tensor=images,
                                 targets=[ClassifierOutputTarget(k)] * len(images)))
            for k in range(NUM_CLASSES)], dim=1)


def post_processed(low: torch.Tensor, size) -> torch.Tensor:
    """pytorch-grad-cam's post-processing: ReLU, min-max, resize, min-max."""
    def minmax(x):
        x = x - x.amin(dim=(-2, -1), keepdim=True)
        return x / (1e-7 + x.amax(dim=(-2, -1), keepdim=True))

    return minmax(F.interpolate(minmax(low.clamp(min=0)), size=size, mode="bilinear",
                                align_corners=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, images = build(args.size, args.batch, args.device)
    with torch.no_grad():
        net(images)  # warm-up
    _, t_forward = best_of(args.repeat, lambda: net(images).sum().item())
    rows, ok = [], True
    for layer in ("relu", "features.transition3"):
        (_, low), t_ours = best_of(
            args.repeat, lambda layer=layer: gradcam(net, images, layer=layer, return_low_res=True))
        ref, t_ref = best_of(1, lambda layer=layer: reference_maps(net, images, layer))
        diff = (post_processed(low, images.shape[-2:]).cpu() - ref.cpu()).abs().max().item()
        rows.append((layer, t_ours, t_ref, diff))
        if layer == "relu":
            ok = ok and t_ref / t_ours >= 10 and t_ours / t_forward <= 2 and diff <= 0.03
    print(f"DenseNet-121, {args.batch} images at {args.size} px, {NUM_CLASSES} classes, "
          f"{args.device}, {args.threads} threads; best of {args.repeat}")
    print(f"plain forward pass: {t_forward:.3f} s")
    print(f"{'layer':<22}{'chexlib (s)':>12}{'x forward':>10}{'pytorch-grad-cam (s)':>22}"
          f"{'speed-up':>10}{'max |diff|':>12}")
    for layer, t_ours, t_ref, diff in rows:
        print(f"{layer:<22}{t_ours:>12.3f}{t_ours / t_forward:>10.2f}{t_ref:>22.2f}"
              f"{t_ref / t_ours:>10.1f}{diff:>12.1e}")
    print("requirements (head ReLU): speed-up >= 10, <= 2x forward, max |diff| <= 0.03")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
