"""What a training run is given and what it gives back: :class:`TrainConfig`, :class:`TrainResult`.

:class:`TrainConfig` holds everything that determines the trained weights; it is stored in each
checkpoint, and a resume point of another configuration is not resumed. :class:`TrainResult` says
what :func:`chexlib.train.loop.fit` did and where its files are.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from chexlib.observations import OBSERVATIONS

__all__ = ["TrainConfig", "TrainResult"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (it is stored in each checkpoint)."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-4
    seed: int = 0
    uncertainty_policy: str = "zeros"
    image_size: int = 128
    weights: str = "auto"
    pos_weight: bool = False
    lr_schedule: str = "none"
    early_stopping: int = 0
    classes: tuple[str, ...] = OBSERVATIONS
    #: :func:`chexlib.fingerprint.data_fingerprint` of the training and internal-validation
    #: rows ("" where not recorded): a checkpoint of other data is neither resumed nor reused.
    data: str = ""
    #: The autocast dtype the weights were trained in ("float32", "bfloat16" or "float16"; ""
    #: where not recorded), set by :func:`chexlib.train.loop.fit` from the ``precision``
    #: parameter on this device: weights trained in float32 are not reused for a bf16 run.
    autocast: str = ""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """The training configuration of a notebook parameter set."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("classes", "data", "autocast")}
        return cls(**{k: params[k] for k in names})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out


@dataclass
class TrainResult:
    """What :func:`chexlib.train.loop.fit` did and where the results are."""

    best_path: Path
    last_path: Path
    history: pd.DataFrame
    status: str  # "trained", "resumed" or "reused"
    seconds: float = 0.0
    images_per_second: float = math.nan
    notes: list[str] = field(default_factory=list)
