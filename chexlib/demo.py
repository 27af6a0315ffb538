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
                  image_size: int = 48, seed: int = 0,
                  drain_rates: tuple[float, float, float] = (0.0, 0.0, 0.0)
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Write a phantom (10 training, ``n_valid`` reported images) and a demo run folder.

    The run folder gets ``checkpoint.pt`` (random weights, seeded), ``predictions.csv`` (uniform
    random probabilities), ``thresholds.json`` (0.5 for every class), ``outcomes.csv`` and
    ``params.yaml`` (this phantom and image size, the CPU), so that
    :func:`chexlib.session.open_run` opens it. ``drain_rates``: the phantom's chest-drain rates
    (train pneumothorax, valid pneumothorax, other images).

    Returns
    -------
    probs, outcomes : ndarray [n_valid, 14]
        The made-up probabilities and the outcomes they give at threshold 0.5.
    """
    data_root, run_dir = Path(data_root), Path(run_dir)
    generate(data_root, n_train=10, n_valid=n_valid, seed=seed + 3, workers=1, progress=False,
             p_drain=drain_rates[0], p_drain_valid=drain_rates[1], p_drain_other=drain_rates[2])
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
                       "phantom_drain_rate": drain_rates[0],
                       "phantom_drain_rate_valid": drain_rates[1],
                       "phantom_drain_rate_other": drain_rates[2],
                       "image_size": image_size, "run_dir": str(run_dir.resolve()),
                       "device": "cpu", "seed": seed}, source="make_demo_run")
    run.write_params(params)
    return probs, outcomes
