"""A run folder without training: for tests, benchmarks and trying the browser in seconds.

:func:`make_demo_run` writes a small phantom and a run folder as notebooks 02 and 03 leave it,
with an *untrained* (seeded, random-weight) DenseNet-121 and made-up predictions. Its maps and
outcomes mean nothing; its files have every format the explanation notebooks and the browser
read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from chexlib import artefacts
from chexlib.checkpoint import save_checkpoint
from chexlib.model import densenet121
from chexlib.observations import OBSERVATIONS
from chexlib.params import validate
from chexlib.phantom import generate
from chexlib.run import RunFolder


def make_demo_run(data_root: str | os.PathLike, run_dir: str | os.PathLike, n_valid: int = 12,
                  image_size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a phantom (10 training, ``n_valid`` reported images) and a demo run folder.

    The run folder gets ``checkpoint.pt`` (random weights, seeded), ``predictions.csv`` (uniform
    random probabilities), ``thresholds.json`` (0.5 for every class), ``outcomes.csv`` and
    ``params.yaml`` (this phantom and image size, the CPU), so that
    :func:`chexlib.session.open_run` opens it.

    Returns
    -------
    probs, outcomes : ndarray [n_valid, 14]
        The made-up probabilities and the outcomes they give at threshold 0.5.
    """
    data_root, run_dir = Path(data_root), Path(run_dir)
    generate(data_root, n_train=10, n_valid=n_valid, seed=seed + 3, workers=1, progress=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    labels = pd.read_csv(data_root / "valid.csv")
    paths = labels["Path"].tolist()
    y = np.nan_to_num(labels[list(OBSERVATIONS)].to_numpy(float)).clip(0, 1)
    probs = np.random.default_rng(seed).uniform(size=y.shape)
    table = pd.DataFrame({"threshold": np.full(len(OBSERVATIONS), 0.5)}, index=list(OBSERVATIONS))
    outcomes = np.where(probs >= 0.5, np.where(y == 1, "TP", "FP"), np.where(y == 1, "FN", "TN"))
    run = RunFolder(run_dir)
    artefacts.write_predictions(run.predictions, paths, y, probs)
    artefacts.write_thresholds(run.thresholds, table, split="made up (demo run)")
    artefacts.write_outcomes(run.outcomes, paths, outcomes)
    torch.manual_seed(seed)
    model = densenet121(num_classes=len(OBSERVATIONS), weights="none").eval()
    save_checkpoint(run.checkpoint, model, classes=OBSERVATIONS, image_size=image_size,
                    uncertainty_policy="zeros")
    params = validate({"dataset": "phantom", "data_root": str(data_root.resolve()),
                       "phantom_n_train": 10, "phantom_n_valid": n_valid, "phantom_seed": seed + 3,
                       "image_size": image_size, "run_dir": str(run_dir.resolve()),
                       "device": "cpu", "seed": seed}, source="make_demo_run")
    run.write_params(params)
    return probs, outcomes


@torch.no_grad()
def random_batchnorm(model: torch.nn.Module, generator: torch.Generator, *, scale: bool = True,
                     negative_share: float = 0.0, shift: bool = True) -> torch.nn.Module:
    """Give every BatchNorm of ``model`` random running statistics and affine parameters.

    A freshly initialised network has trivial BatchNorms (mean 0, variance 1, scale 1, shift 0),
    which hide the errors explanation methods make on trained ones; tests and benchmarks use
    this instead. Per BatchNorm, drawn from ``generator`` in this order: running mean
    (N(0, 0.2^2)), running variance (U(0.5, 2)); with ``negative_share > 0`` a sign per channel
    (negative with that probability); with ``scale`` the scale (U(0.5, 1.5), signed); with
    ``shift`` the shift (N(0, 0.2^2)), else the shift that makes BatchNorm(0) = 0.

    Returns
    -------
    the model, modified in place
    """
    for bn in model.modules():
        if not isinstance(bn, torch.nn.BatchNorm2d):
            continue
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
        bn.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
        if negative_share > 0:
            sign = torch.where(torch.rand(n, generator=generator) < negative_share, -1.0, 1.0)
        else:
            sign = torch.ones(n)
        if scale:
            bn.weight.copy_(sign * (torch.rand(n, generator=generator) + 0.5))
        if shift:
            bn.bias.copy_(torch.randn(n, generator=generator) * 0.2)
        else:
            bn.bias.copy_(bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps))
    return model
