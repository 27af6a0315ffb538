"""Benchmark: training time of the `default` preset on this machine, against a plain loop.

Trains exactly what notebook 02 trains with the `default` preset (phantom data, 128 px, batch 16,
its epochs), through `chexlib.train.fit` — validation every epoch, checkpoints, resume points — and
times it. The baseline is a bare torchvision DenseNet-121 training loop (no validation, no
checkpoints) over the same data and batch size for a fixed number of steps, measured in the same
run, so the ratio of images/s says what chexlib's bookkeeping costs.

    python benchmarks/train_default.py [--baseline-steps 40] [--out runs/bench-train]

Prints a table; the figures in the README come from it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader

from chexlib import params as P
from chexlib.model import densenet121
from chexlib.project import absolute_paths, ensure_data, project_root
from chexlib.train import TrainConfig, epoch_batches, fit, masked_bce
from chexlib.train.launch import training_data


def baseline(train_ds, params, steps):
    """Images/s of a bare torchvision training loop on the same batches."""
    torch.manual_seed(params["seed"])
    model = torchvision.models.densenet121(num_classes=14)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["lr"])
    batches = epoch_batches(len(train_ds), params["batch_size"], params["seed"], 0)[:steps]
    model.train()
    seen, start = 0, time.perf_counter()
    for images, targets, masks, _ in DataLoader(train_ds, batch_sampler=batches):
        loss = masked_bce(model(images), targets, masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-steps", type=int, default=40)
    parser.add_argument("--out", default=None, help="training folder (default: a temporary one)")
    args = parser.parse_args()
    params = absolute_paths(P.resolve("default"), project_root())
    ensure_data(params, Path(params["data_root"]))
    root = Path(params["data_root"])
    train_ds, val_ds = training_data(params, root, root / ".cache", progress=False)
    threads = torch.get_num_threads()
    base = baseline(train_ds, params, args.baseline_steps)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="chexlib-bench-"))
    config = TrainConfig.from_params(params)
    torch.manual_seed(params["seed"])
    model = densenet121(num_classes=14, weights=params["weights"])
    start = time.perf_counter()
    result = fit(model, train_ds, val_ds, config, out, device="cpu", retrain=True, progress=False)
    total = time.perf_counter() - start
    images = len(train_ds) * config.epochs
    print()
    print(f"default preset: {len(train_ds)} training images, {config.epochs} epochs, "
          f"{config.image_size} px, batch {config.batch_size}, {threads} threads, "
          f"initial weights: {model.weights_source}")
    print(f"{'measure':<44} {'value':>10}")
    print(f"{'fit(): total training time, s':<44} {total:>10.1f}")
    print(f"{'fit(): training images/s (incl. validation)':<44} {images / total:>10.1f}")
    print(f"{'baseline bare loop: images/s':<44} {base:>10.1f}")
    print(f"{'ratio fit / baseline throughput':<44} {images / total / base:>10.2f}")
    print(f"{'best internal-validation mean AUROC':<44} {result.history['val_auroc'].max():>10.3f}")


if __name__ == "__main__":
    main()
