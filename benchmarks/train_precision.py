"""Benchmark: training images/s in float32 against ``precision: auto``, in one run, on this machine.

Both arms take the same optimisation steps of the study's recipe (``chexlib.train.train_step``:
DenseNet-121, Adam, masked BCE) on the same batches, held in memory so that only the model's
arithmetic is timed:

- ``fp32``: float32, NCHW (what the CPU ran before ``auto`` chose bf16);
- ``auto``: what ``precision: auto`` picks here (``chexlib.device.amp_dtype``): on a CPU with
  native bf16, bf16 autocast and channels-last; elsewhere float32 (the ratio is then ~1).
  ``--precision bf16`` forces bf16 + channels-last instead, to measure what it costs on a CPU
  without native bf16.

Rounds alternate (fp32, auto, fp32, auto, ...) after a warm-up of each arm, so that a machine
getting slower or faster over the run affects both; the ratio is the median over the rounds of
``auto / fp32`` images/s. The accuracy side is the loss: the same batch, the same initial
weights, the masked BCE in float32 and under ``auto`` (relative difference), and each arm's mean
loss over its steps from the same start.

    python benchmarks/train_precision.py [--size 128] [--batch 16] [--steps 8] [--rounds 3]
                                         [--data phantom|random] [--precision auto|bf16]
                                         [--json FILE]

Prints a table; the figures in the README come from it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from chexlib.device import amp_dtype, autocast_name, channels_last, cpu_has_native_bf16, to_device
from chexlib.files import atomic_write_text
from chexlib.model import densenet121
from chexlib.train import masked_bce, train_step


def batches(kind: str, size: int, batch: int, count: int, seed: int) -> list[tuple]:
    """``count`` training batches of images, targets and masks, in memory."""
    if kind == "phantom":
        from chexlib import params as P
        from chexlib.project import absolute_paths, ensure_data, project_root
        from chexlib.train.launch import training_data

        params = P.resolve("default", overrides={"image_size": size})
        params = absolute_paths(params, project_root())
        root = Path(params["data_root"])
        ensure_data(params, root)
        train_ds, _ = training_data(params, root, root / ".cache", progress=False)
        items = [train_ds[i] for i in range(count * batch)]
        return [tuple(torch.stack([item[k] for item in items[j * batch:(j + 1) * batch]])
                      for k in range(3)) for j in range(count)]
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, size, size, generator=generator),
             torch.randint(0, 2, (batch, 14), generator=generator).float(),
             torch.ones(batch, 14)) for _ in range(count)]


class Arm:
    """One precision: its own copy of the model and optimizer, started from the same weights."""

    def __init__(self, name: str, model: torch.nn.Module, amp: torch.dtype | None):
        self.name, self.amp = name, amp
        self.format = torch.channels_last if channels_last(torch.device("cpu"), amp) else None
        self.model = copy.deepcopy(model).train()
        if self.format is not None:
            self.model.to(memory_format=self.format)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.rates: list[float] = []
        self.losses: list[float] = []

    def run(self, data: list[tuple], record: bool = True) -> None:
        seen, start = 0, time.perf_counter()
        for images, targets, masks in data:
            loss = train_step(self.model, self.optimizer, to_device(images, torch.device("cpu"),
                                                                    self.format),
                              targets, masks, amp=self.amp)
            seen += len(images)
            if record:
                self.losses.append(loss)
        if record:
            self.rates.append(seen / (time.perf_counter() - start))


def first_loss(model: torch.nn.Module, data: tuple, amp: torch.dtype | None) -> float:
    """The masked BCE of one batch in training mode, without a step."""
    images, targets, masks = data
    with torch.no_grad(), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        logits = copy.deepcopy(model).train()(images)
    return masked_bce(logits.float(), targets, masks).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="steps per arm and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each arm first")
    parser.add_argument("--data", choices=("phantom", "random"), default="phantom")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("auto", "bf16"), default="auto",
                        help="the second arm: what auto picks here, or bf16 forced (to see what "
                             "bf16 costs on a CPU without native support)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    auto = amp_dtype(torch.device("cpu"), args.precision)
    data = batches(args.data, args.size, args.batch, args.warmup + args.steps, args.seed)
    model = densenet121(num_classes=14, weights="none")
    losses = {"fp32": first_loss(model, data[0], None), "auto": first_loss(model, data[0], auto)}
    arms = [Arm("fp32", model, None), Arm("auto", model, auto)]
    for arm in arms:
        arm.run(data[:args.warmup], record=False)
    for _ in range(args.rounds):
        for arm in arms:
            arm.run(data[args.warmup:])
    fp32, fast = arms
    ratios = [b / a for a, b in zip(fp32.rates, fast.rates)]
    report = {
        "threads": torch.get_num_threads(), "size": args.size, "batch": args.batch,
        "steps_per_round": args.steps, "rounds": args.rounds, "data": args.data,
        "cpu_native_bf16": cpu_has_native_bf16(), "second_arm": args.precision,
        "auto": {"autocast": autocast_name(auto),
                 "channels_last": fast.format is not None},
        "fp32_images_per_s": fp32.rates, "auto_images_per_s": fast.rates,
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "first_loss_fp32": losses["fp32"], "first_loss_auto": losses["auto"],
        "first_loss_relative_difference": abs(losses["auto"] - losses["fp32"]) / losses["fp32"],
        "mean_loss_fp32": statistics.fmean(fp32.losses),
        "mean_loss_auto": statistics.fmean(fast.losses),
    }
    print(f"DenseNet-121 training step, {args.size} px, batch {args.batch}, {report['threads']} "
          f"threads, {args.data} data; CPU native bf16: {report['cpu_native_bf16']}; "
          f"{args.precision} = "
          f"{report['auto']['autocast']}" + (" + channels-last" if fast.format else ""))
    arm = f"{args.precision} img/s"
    print(f"{'round':<8} {'fp32 img/s':>12} {arm:>12} {'ratio':>8}")
    for k, (a, b) in enumerate(zip(fp32.rates, fast.rates), 1):
        print(f"{k:<8} {a:>12.1f} {b:>12.1f} {b / a:>8.2f}")
    print(f"median ratio {args.precision} / fp32: {report['ratio_median']:.2f} "
          f"(min {report['ratio_min']:.2f})")
    print(f"loss of one batch, same weights: fp32 {losses['fp32']:.5f}, {args.precision} "
          f"{losses['auto']:.5f} "
          f"(relative difference {report['first_loss_relative_difference']:.2%})")
    print(f"mean loss over the timed steps: fp32 {report['mean_loss_fp32']:.5f}, "
          f"{args.precision} {report['mean_loss_auto']:.5f}")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
