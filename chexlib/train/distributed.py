"""Data-parallel training with PyTorch's own engine: ``torch.distributed`` and DDP.

Under ``torchrun`` every process reads its rank and the world size from the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` ...); :func:`init_from_env` joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU) and returns a :class:`DistContext`. Without
those variables it returns the single-process context and nothing is initialised, so the same
training code runs in a notebook, in ``python -m chexlib.train`` and under ``torchrun``.

Batches: :class:`ShardedBatchSampler` splits each *global* mini-batch of
:func:`chexlib.train.steps.epoch_batches` between the ranks. The global batches do not depend on
the number of processes, so ``batch_size`` keeps its meaning (the study's 16 images per step) and
a run can resume at any step. torch's ``DistributedSampler`` would instead draw a different order
per world size, pad the data to a multiple of it and cannot start mid-epoch.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from chexlib.device import select_device
from chexlib.errors import ParameterError

#: How long a rank waits for the others (rank 0 validates alone after each epoch).
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run.

    Attributes
    ----------
    rank, world_size, local_rank : int
        As torchrun sets them; 0, 1, 0 for a single process.
    backend : str or None
        ``nccl`` or ``gloo`` when a process group is initialised, else None.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised (also for torchrun with one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, history and logs."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def broadcast_floats(self, values: list[float], device: torch.device) -> list[float]:
        """Rank 0's ``values`` on every rank."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()

    def sum_float(self, value: float, device: torch.device) -> float:
        """The sum of ``value`` over the ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item())


def launched_by_torchrun() -> bool:
    """True when the environment carries torchrun's rank variables."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_from_env(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join torchrun's process group, or stay single-process; pick this process's device.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "mps"}
        The ``device`` parameter. Under torchrun on CUDA each process takes GPU ``LOCAL_RANK``.

    Returns
    -------
    DistContext, torch.device
    """
    chosen = select_device(device)
    if not launched_by_torchrun():
        return DistContext(), chosen
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ParameterError(
                f"torchrun started local rank {local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node "
                f"{torch.cuda.device_count()} or fewer")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        backend = "nccl"
    elif chosen.type == "cpu":
        backend = "gloo"
    else:
        raise ParameterError(f"device {chosen.type!r} cannot train under torchrun; use cuda or cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return DistContext(rank, world, local_rank, backend), chosen


def shutdown(context: DistContext, wait: bool = True) -> None:
    """Leave the process group; ``wait`` first for every rank (so rank 0's files are complete)."""
    if context.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def shard(batch: list[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s contiguous part of a global batch; parts differ in size by at most one."""
    bounds = np.linspace(0, len(batch), world_size + 1).round().astype(int)
    return batch[bounds[rank]:bounds[rank + 1]]


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's share of an epoch's global mini-batches, from step ``start`` on.

    Parameters
    ----------
    batches : list of list of int
        The epoch's global batches (:func:`chexlib.train.steps.epoch_batches`).
    rank, world_size : int
    start : int
        First step to serve (to resume mid-epoch).
    """

    def __init__(self, batches: list[list[int]], rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ParameterError(f"rank {rank} is outside 0..{world_size - 1}")
        small = [len(b) for b in batches if len(b) < world_size]
        if small:
            raise ParameterError(
                f"a mini-batch of {small[0]} image(s) cannot be split between {world_size} "
                f"processes; use a batch_size of at least {2 * world_size}")
        self.batches = batches[start:]
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield shard(batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self.batches)
