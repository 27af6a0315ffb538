"""Benchmark: LRP for all 14 classes from one shared forward pass vs one zennit call per class.

On a random-weight DenseNet-121 with random BatchNorm statistics, canonized (BatchNorms folded,
as :func:`chexlib.explain.lrp` explains it by default), compares :func:`chexlib.explain.lrp`
(composite registered once, one forward, one backward per class, the guarded shared-forward
path) with zennit's ``Gradient`` attributor called once per class on the same canonized copy
(a forward and a backward each): wall time, the largest difference between the maps, and peak
memory of 14 classes vs 1 class. Required: speed-up >= 1.5 in every paired repeat, maps equal
to 1e-5 of their peak, memory ratio <= 2. The timings are paired: ``--repeats`` times (default 3) both cases run, in
alternating order, and the median of the per-repeat ratios is the figure (this machine's speed
drifts by tens of percent between single runs).

Peak memory: each case runs in a fresh subprocess, which reports its peak resident memory
minus the memory after the model and images were built (Linux: the peak-RSS mark is reset with
``/proc/self/clear_refs`` and read as ``VmHWM``; elsewhere ``ru_maxrss`` minus its value after
construction); on CUDA,
``torch.cuda.max_memory_allocated`` over the case instead.

Usage::

    python benchmarks/lrp_all_classes.py [--size 224] [--batch 8] [--composite NAME]
                                         [--batchnorm fold|pass] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from zennit.attribution import Gradient

from chexlib.explain import explainable_copy, lrp
from chexlib.explain.composites import make_composite
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.model import densenet121

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/support.py
from support import random_batchnorm  # noqa: E402

NUM_CLASSES = 14


def build(size: int, batch: int, device: str, batchnorm: str = "fold"
          ) -> tuple[nn.Module, torch.Tensor]:
    """A random DenseNet-121 (random BN statistics) as an explainable copy, and images."""
    torch.manual_seed(0)
    model = densenet121(num_classes=NUM_CLASSES, weights="none")
    gen = torch.Generator().manual_seed(1)
    random_batchnorm(model, gen)
    images = torch.randn(batch, 3, size, size, generator=gen)
    return explainable_copy(model, batchnorm).to(device), images.to(device)


def per_class_zennit(net: nn.Module, images: torch.Tensor, composite: str, classes) -> torch.Tensor:
    """One zennit attributor call (forward + backward) per class; [B, K, H, W]."""
    maps = []
    for k in classes:
        seed = nn.functional.one_hot(torch.tensor(k), NUM_CLASSES).to(images)
        with Gradient(net, make_composite(composite)) as attributor:
            _, relevance = attributor(images.clone(), lambda out, s=seed: out * s)
        maps.append(relevance.sum(1))
    return torch.stack(maps, 1)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def compare(args) -> dict:
    """Paired timings: each repeat times both, in alternating order (drift cancels in the ratio)."""
    net, images = build(args.size, args.batch, args.device, args.batchnorm)
    classes = list(range(NUM_CLASSES))
    # Warm-up of both at the batch size timed (allocator, kernels for these shapes, and the
    # shared path's one-time check against zennit): a first call ran up to 2x slower.
    lrp(net, images, classes=[0, 1], composite=args.composite)
    per_class_zennit(net, images, args.composite, [0])
    cases = {
        "shared": lambda: lrp(net, images, classes=classes, composite=args.composite),
        "loop": lambda: per_class_zennit(net, images, args.composite, classes),
    }
    times: dict[str, list[float]] = {"shared": [], "loop": []}
    maps: dict[str, torch.Tensor] = {}
    for repeat in range(args.repeats):
        order = ("shared", "loop") if repeat % 2 == 0 else ("loop", "shared")
        for name in order:
            maps[name], seconds = timed(cases[name])
            times[name].append(seconds)
    ratios = [loop / shared for loop, shared in zip(times["loop"], times["shared"])]
    return {
        "times": times,
        "ratios": ratios,
        "max_abs_diff": (maps["shared"] - maps["loop"]).abs().max().item(),
        "max_abs_map": maps["loop"].abs().max().item(),
    }


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5), so construction's peak does
    not hide the case's; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """Peak resident memory in bytes: VmHWM where readable, else ``ru_maxrss`` (KiB on Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_case(args) -> None:
    """Run one case and print its peak memory above the post-construction baseline (bytes)."""
    net, images = build(args.size, args.batch, args.device, args.batchnorm)
    classes = list(range(NUM_CLASSES)) if args.case == "all" else [0]
    if args.device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        lrp(net, images, classes=classes, composite=args.composite)
        peak = torch.cuda.max_memory_allocated() - base
    else:
        reset = _reset_peak_rss()
        base = _current_rss() if reset else _peak_rss()
        lrp(net, images, classes=classes, composite=args.composite)
        peak = _peak_rss() - base
    print(json.dumps({"peak": peak}))


def _current_rss() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))


def measure_peak(args, case: str) -> int:
    command = [
        sys.executable,
        __file__,
        "--case",
        case,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--composite",
        args.composite,
        "--batchnorm",
        args.batchnorm,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--composite", default=DEFAULT_COMPOSITE)
    parser.add_argument("--batchnorm", choices=("fold", "pass"), default="fold")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3,
                        help="paired timings of both cases (default 3; the median ratio counts)")
    parser.add_argument("--case", choices=("all", "one"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        peak_case(args)
        return 0
    result = compare(args)
    peak_all, peak_one = measure_peak(args, "all"), measure_peak(args, "one")
    speedup = statistics.median(result["ratios"])
    mib = 2**20
    print(
        f"DenseNet-121, {args.batch} images at {args.size} px, {NUM_CLASSES} classes, "
        f"{args.composite}, BatchNorms {args.batchnorm}, {args.device}, {args.threads} threads, "
        f"{args.repeats} paired repeats"
    )
    print(f"{'case':<36}{'value':>14}")
    for n, (loop, shared, ratio) in enumerate(zip(result["times"]["loop"],
                                                  result["times"]["shared"], result["ratios"])):
        print(f"{f'repeat {n + 1}: zennit per class / shared (s)':<36}"
              f"{f'{loop:.2f} / {shared:.2f}':>14}{f'{ratio:.2f}x':>8}")
    print(f"{'speed-up, median':<36}{speedup:>14.2f}")
    spread = f"{min(result['ratios']):.2f} - {max(result['ratios']):.2f}"
    print(f"{'speed-up, min - max (min >= 1.5)':<36}{spread:>14}")
    print(f"{'max |difference| of maps':<36}{result['max_abs_diff']:>14.2e}")
    print(f"{'max |map|':<36}{result['max_abs_map']:>14.2e}")
    print(f"{'peak memory, 1 class (MiB)':<36}{peak_one / mib:>14.1f}")
    print(f"{'peak memory, 14 classes (MiB)':<36}{peak_all / mib:>14.1f}")
    print(f"{'memory ratio (<= 2 required)':<36}{peak_all / max(peak_one, 1):>14.2f}")
    if peak_one < mib:
        print("peak memory of one class is under 1 MiB: too small to compare; use larger --size")
    ok = (
        min(result["ratios"]) >= 1.5  # every paired repeat, not only the median
        and mib <= peak_one
        and peak_all <= 2 * peak_one
        and result["max_abs_diff"] <= 1e-5 * result["max_abs_map"]
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
