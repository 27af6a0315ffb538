"""Benchmark: Grad-CAM for all 14 classes from one forward pass vs pytorch-grad-cam, two ways.

On a random-weight DenseNet-121 (random BatchNorm statistics), the same images, the same layer
module (the head's ReLU and, second, a transition layer, for which chexlib's backward pass is
longer):

- chexlib: :func:`chexlib.explain.gradcam`, all 14 classes (one forward, a short backward per
  class);
- pytorch-grad-cam, batched: ``pytorch_grad_cam.GradCAM`` built once (warm), then *one* call on
  the batch repeated 14 times with 14 x B targets (``ClassifierOutputTarget(k)`` on the rows of
  class k): one forward and one backward of 14 x B rows, the usual way to get 14 classes at once;
- pytorch-grad-cam, per class (``--no-per-class`` skips it): the same warm object called once per
  class on the B images (14 forwards and backwards of B rows). On 2 CPU threads at 224 px this
  is the faster of the two (~2.9x), so the fair figure is the speed-up against it;
- a plain forward pass (``torch.no_grad``) of the same model, for chexlib's overhead.

The timings are paired: every case runs once as a warm-up, then ``--repeat`` times (default 3) each
repeat times every case, in alternating order (drift and other processes' load cancel in the
ratios); the per-repeat ratios and their median are the figures. Between calls the
pytorch-grad-cam object drops the graph it retains of its last call (``cam.outputs``), so that
two graphs never coexist (at 8 images the batched call peaks at ~18 GB on CPU).

Requirements checked (head ReLU): chexlib at least 10x faster than each pytorch-grad-cam way in
every repeat, within 2x a forward pass (median), maps equal to 0.03 after pytorch-grad-cam's own
post-processing.

Usage::

    python benchmarks/gradcam_all_classes.py [--size 224] [--batch 8] [--repeat 3]
                                             [--layers relu features.transition3] [--no-per-class]
"""

from __future__ import annotations

import argparse
import statistics
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


def timed(fn) -> tuple[object, float]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


class Reference:
    """pytorch-grad-cam on ``layer`` of a graph-building copy of ``net``, built once (warm)."""

    def __init__(self, net: nn.Module, layer: str):
        self.net = explainable_copy(net).requires_grad_(True)  # pytorch-grad-cam needs a graph
        module = dict(self.net.named_modules())[layer]
        self.cam = ReferenceGradCAM(model=self.net, target_layers=[module])

    def _call(self, images: torch.Tensor, targets) -> torch.Tensor:
        maps = torch.from_numpy(self.cam(input_tensor=images, targets=targets))
        self.cam.outputs = None  # drop the graph it retains (retain_graph=True) for the next call
        return maps

    def batched(self, images: torch.Tensor) -> torch.Tensor:
        """One call: row k * B + i is image i with target class k; [B, 14, H, W]."""
        b = len(images)
        targets = [ClassifierOutputTarget(k) for k in range(NUM_CLASSES) for _ in range(b)]
        maps = self._call(images.repeat(NUM_CLASSES, 1, 1, 1), targets)
        return maps.view(NUM_CLASSES, b, *maps.shape[-2:]).transpose(0, 1)

    def per_class(self, images: torch.Tensor) -> torch.Tensor:
        """One call per class on the B images; [B, 14, H, W]."""
        return torch.stack([self._call(images, [ClassifierOutputTarget(k)] * len(images))
                            for k in range(NUM_CLASSES)], dim=1)

    def close(self) -> None:
        self.cam.__exit__(None, None, None)  # removes its hooks


def post_processed(low: torch.Tensor, size) -> torch.Tensor:
    """pytorch-grad-cam's post-processing: ReLU, min-max, resize, min-max."""
    def minmax(x):
        x = x - x.amin(dim=(-2, -1), keepdim=True)
        return x / (1e-7 + x.amax(dim=(-2, -1), keepdim=True))

    return minmax(F.interpolate(minmax(low.clamp(min=0)), size=size, mode="bilinear",
                                align_corners=False))


def measure(net: nn.Module, images: torch.Tensor, layer: str, repeat: int, per_class: bool) -> dict:
    """Paired timings of every case on ``layer``; per-case lists of seconds, and the max diffs."""
    ref = Reference(net, layer)

    def forward():
        with torch.no_grad():
            return net(images).sum().item()

    cases = {"forward": forward,
             "chexlib": lambda: gradcam(net, images, layer=layer, return_low_res=True),
             "batched": lambda: ref.batched(images)}
    if per_class:
        cases["per_class"] = lambda: ref.per_class(images)
    try:
        results = {name: fn() for name, fn in cases.items()}  # warm-up, the same for every case
        times: dict[str, list[float]] = {name: [] for name in cases}
        for r in range(repeat):
            for name in (list(cases) if r % 2 == 0 else list(cases)[::-1]):
                results[name], seconds = timed(cases[name])
                times[name].append(seconds)
    finally:
        ref.close()
    _, low = results["chexlib"]
    ours = post_processed(low, images.shape[-2:]).cpu()
    diffs = {name: (ours - results[name].cpu()).abs().max().item()
             for name in ("batched", "per_class") if name in results}
    return {"times": times, "diffs": diffs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=["relu", "features.transition3"])
    parser.add_argument("--no-per-class", dest="per_class", action="store_false",
                        help="skip the second baseline (pytorch-grad-cam called once per class)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    net, images = build(args.size, args.batch, args.device)
    print(f"DenseNet-121, {args.batch} images at {args.size} px, {NUM_CLASSES} classes, "
          f"{args.device}, {args.threads} threads; warm-up of every case, then {args.repeat} "
          f"paired repeats in alternating order", flush=True)
    ok = True
    for layer in args.layers:
        result = measure(net, images, layer, args.repeat, args.per_class)
        t = result["times"]
        print(f"\nlayer {layer}")
        header = f"{'repeat':<8}{'forward (s)':>12}{'chexlib (s)':>12}{'x forward':>10}"
        header += f"{'batched (s)':>12}{'speed-up':>10}"
        if "per_class" in t:
            header += f"{'per class (s)':>14}{'speed-up':>10}"
        print(header)
        ratios: dict[str, list[float]] = {"x forward": [], "batched": [], "per_class": []}
        for r in range(args.repeat):
            ratios["x forward"].append(t["chexlib"][r] / t["forward"][r])
            ratios["batched"].append(t["batched"][r] / t["chexlib"][r])
            line = (f"{r + 1:<8}{t['forward'][r]:>12.3f}{t['chexlib'][r]:>12.3f}"
                    f"{ratios['x forward'][r]:>10.2f}{t['batched'][r]:>12.2f}"
                    f"{ratios['batched'][r]:>10.1f}")
            if "per_class" in t:
                ratios["per_class"].append(t["per_class"][r] / t["chexlib"][r])
                line += f"{t['per_class'][r]:>14.2f}{ratios['per_class'][r]:>10.1f}"
            print(line)
        median = {k: statistics.median(v) for k, v in ratios.items() if v}
        line = (f"{'median':<8}{statistics.median(t['forward']):>12.3f}"
                f"{statistics.median(t['chexlib']):>12.3f}{median['x forward']:>10.2f}"
                f"{statistics.median(t['batched']):>12.2f}{median['batched']:>10.1f}")
        if "per_class" in t:
            line += f"{statistics.median(t['per_class']):>14.2f}{median['per_class']:>10.1f}"
        print(line + "   (median of each column)")
        print("max |diff| of the maps: " + ", ".join(
            f"{name.replace('_', ' ')} {diff:.1e}" for name, diff in result["diffs"].items()))
        if layer == "relu":
            speedups = ratios["batched"] + ratios["per_class"]
            ok = (ok and min(speedups) >= 10 and median["x forward"] <= 2
                  and max(result["diffs"].values()) <= 0.03)
    if "relu" in args.layers:
        print("\nrequirements (head ReLU): speed-up >= 10 in every repeat, <= 2x forward (median), "
              "max |diff| <= 0.03")
        print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
