"""Every random generator of a run: seeding them, and their state in a checkpoint-safe form.

:func:`seed_everything` seeds them at the start of every notebook and training job.

Resuming a run reproduces the uninterrupted one only if Python's ``random``, numpy's global
generator and torch's generators continue where they stopped. :func:`capture_rng_state` returns
their states as plain lists, numbers and uint8 tensors, which ``torch.load(weights_only=True)``
accepts (numpy's own state holds an ndarray, which it refuses).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from chexlib.errors import CheckpointError


def capture_rng_state() -> dict:
    """The state of Python's, numpy's global and torch's random generators.

    Returns
    -------
    dict
        ``python``: {version, state (625 ints), gauss_next}; ``numpy``: {bit_generator, keys
        (624 ints), pos, has_gauss, cached_gaussian}; ``torch``: uint8 tensor; ``cuda``: list of
        uint8 tensors, one per device (empty without CUDA). Safe for ``weights_only=True``.
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": str(name),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the generators to a state from :func:`capture_rng_state`.

    CUDA states are restored for the devices present (none without CUDA).

    Raises
    ------
    CheckpointError
        ``state`` lacks one of ``python``, ``numpy``, ``torch``.
    """
    missing = [
        k for k in ("python", "numpy", "torch") if not isinstance(state, Mapping) or k not in state
    ]
    if missing:
        raise CheckpointError(
            f"rng state lacks {', '.join(missing)}: expected the dict from capture_rng_state()"
        )
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state((
        npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32), npy["pos"],
        npy["has_gauss"], npy["cached_gaussian"],
    ))  # fmt: skip
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    cuda = list(state.get("cuda") or [])
    if cuda and torch.cuda.is_available():
        states = cuda[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8).cpu() for s in states])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and make torch deterministic on the CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
