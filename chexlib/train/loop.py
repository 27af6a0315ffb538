"""Train DenseNet-121 on CheXpert-format data: the study's recipe, resumable and deterministic.

Defaults follow the study: Adam, lr 1e-4, mini-batch 16, binary cross-entropy on logits, with the
uncertainty policy applied (``ignore`` masks uncertain entries out of the loss). Validation runs
every epoch on the internal, patient-disjoint split of ``train.csv`` — never on ``valid.csv``, the
reported split — and the checkpoint with the best mean validation AUROC is kept.

Files written into the output folder (atomically):

``checkpoint.pt``       the best checkpoint so far (what notebooks 03-06 explain)
``checkpoint_last.pt``  the latest state, for resuming (every epoch and every ``checkpoint_every`` steps)
``history.csv``         one row per epoch

Determinism: the order of the training images in epoch ``e`` is a permutation drawn from its own
generator seeded with ``(seed, e)``, so a run resumed at any step sees the same batches as an
uninterrupted one, and on the CPU ends with the same weights.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from chexlib.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib.errors import CheckpointError, OutOfMemoryError, ParameterError
from chexlib.files import atomic_write_text, remove_stale_temps
from chexlib.metrics import auroc
from chexlib.observations import OBSERVATIONS
from chexlib.params import SCHEMA
from chexlib.progress import progress_bar
from chexlib.train.distributed import DistContext, ShardedBatchSampler

BEST = "checkpoint.pt"
LAST = "checkpoint_last.pt"
HISTORY = "history.csv"


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

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrainConfig:
        """The training configuration of a notebook parameter set."""
        names = {f for f in cls.__dataclass_fields__ if f != "classes"}
        return cls(**{k: params[k] for k in names})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["classes"] = list(self.classes)
        return out


@dataclass
class TrainResult:
    """What :func:`fit` did and where the results are."""

    best_path: Path
    last_path: Path
    history: pd.DataFrame
    status: str  # "trained", "resumed" or "reused"
    seconds: float = 0.0
    images_per_second: float = math.nan
    notes: list[str] = field(default_factory=list)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; other names are checked."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(k for k in ("cuda", "mps", "cpu") if available[k]))
    if name not in available:
        raise ParameterError(f"device {name!r} is unknown; expected auto, cpu, cuda or mps")
    if not available[name]:
        raise ParameterError(f"device {name!r} is not available on this machine; use auto or cpu")
    return torch.device(name)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int,
                  min_size: int = 2) -> list[list[int]]:
    """The mini-batches of one epoch: positions 0..n-1 in an order fixed by ``(seed, epoch)``.

    A last batch smaller than ``min_size`` is dropped: BatchNorm cannot normalise one sample in
    training mode (with ``P`` processes each needs two, so training passes ``min_size = 2P``).
    """
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=generator).tolist()
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if batches and len(batches[-1]) < min_size and len(batches) > 1:
        batches.pop()
    return batches


def positive_weights(targets: np.ndarray, masks: np.ndarray, cap: float = 100.0) -> torch.Tensor:
    """Per-class ``negatives / positives`` among the entries that count, capped (for rare classes)."""
    pos = (targets * masks).sum(axis=0)
    neg = ((1 - targets) * masks).sum(axis=0)
    ratio = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(ratio, 1.0, cap), dtype=torch.float32)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
               pos_weight: torch.Tensor | None = None,
               denominator: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits, averaged over the entries whose mask is 1.

    ``denominator`` replaces ``masks.sum()``: a process holding part of a global batch divides
    by the global batch's count, so that the sum over the processes is the global mean.
    """
    loss = nn.functional.binary_cross_entropy_with_logits(
        logits, targets, reduction="none", pos_weight=pos_weight)
    if denominator is None:
        denominator = masks.sum()
    return (loss * masks).sum() / denominator.clamp_min(1.0)


#: Values of the ``precision`` parameter.
PRECISIONS: tuple[str, ...] = SCHEMA["precision"].choices


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of a device and ``precision``; None means plain float32.

    ``auto`` is bf16 on CUDA cards that support it (no loss scaling needed), fp16 with a gradient
    scaler on older cards, and float32 elsewhere: CPU autocast speeds up little and MPS's is
    partial.
    """
    if precision not in PRECISIONS:
        raise ParameterError(f"precision {precision!r} is unknown; expected one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise ParameterError(f"precision {precision!r} needs a CUDA device; this run uses {device}")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ParameterError("precision 'bf16' is not supported by this GPU; use fp16 or auto")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch of images; channels-last on CUDA, where cuDNN's convolutions prefer it."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 64,
            device: torch.device | str = "cpu", num_workers: int = 0,
            progress: bool = False, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Logits and probabilities of every item of a dataset.

    Returns
    -------
    logits, probs : ndarray float32, shape [N, C]
        In dataset order.
    """
    device = torch.device(device)
    model.eval().to(device)
    amp = amp_dtype(device, precision)
    out = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, *_ in progress_bar(loader, desc="predicting", disable=not progress, leave=False):
        try:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out.append(model(to_device(images, device)).float().cpu())
        except torch.cuda.OutOfMemoryError as exc:
            raise _out_of_memory("prediction", exc, len(images), batch_size, precision,
                                 how="batch_size={}") from exc
    logits = torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
    return logits, 1.0 / (1.0 + np.exp(-logits))


def _validate(model, dataset, config, device, num_workers, precision) -> dict[str, float]:
    logits, probs = predict(model, dataset, batch_size=max(64, config.batch_size), device=device,
                            num_workers=num_workers, precision=precision)
    targets = torch.as_tensor(dataset.targets)
    masks = torch.as_tensor(dataset.masks)
    loss = masked_bce(torch.as_tensor(logits), targets, masks).item()
    per_class = auroc(dataset.targets, probs)
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan
    return {"val_loss": loss, "val_auroc": mean}


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               targets: torch.Tensor, masks: torch.Tensor, *, amp: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, pos_weight: torch.Tensor | None = None,
               denominator: torch.Tensor | None = None, world_size: int = 1) -> float:
    """One optimisation step; returns this process's share of the batch's mean loss.

    Under DDP, which averages gradients over the ``world_size`` processes, each process's loss is
    its images' masked sum over the *global* batch's ``denominator``, times ``world_size``: the
    averaged gradient is then the gradient of the global batch's mean loss, whatever the split.
    """
    device = images.device
    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        logits = net(images)
    share = masked_bce(logits.float(), targets, masks, pos_weight, denominator)
    loss = share * world_size if world_size != 1 else share
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return share.item()


def _new_state(model, config, train_ds, device, amp):
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    scheduler = None
    if config.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1,
                                                               patience=1)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    pos_weight = positive_weights(train_ds.targets, train_ds.masks).to(device) if config.pos_weight else None
    return optimizer, scheduler, scaler, pos_weight


def _save(path, model, config, optimizer, scheduler, scaler, epoch, step, history, best):
    return save_checkpoint(
        path, model, classes=list(config.classes), image_size=config.image_size,
        uncertainty_policy=config.uncertainty_policy,
        normalization={"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        optimizer=optimizer, scheduler=scheduler, scaler=scaler, epoch=epoch, step=step,
        history=history, best=best, config=config.to_dict(), rng=capture_rng_state(),
    )


#: What a resume point must hold besides the weights.
_TRAINING_STATE = ("optimizer_state", "rng", "best", "history", "epoch", "step", "config")


def _resume_point(out_dir: Path, config: TrainConfig, retrain: bool,
                  context: DistContext) -> tuple[dict | None, list[str]]:
    """The last checkpoint to continue from, if it belongs to this configuration.

    Every rank reads the same file and reaches the same decision; only rank 0 moves old files.
    """
    last = out_dir / LAST
    notes: list[str] = []
    state = None
    if last.exists():
        try:
            state = load_checkpoint(last, classes=config.classes, image_size=config.image_size)
        except CheckpointError as err:
            notes.append(f"not resuming: {err}")
        missing = [k for k in _TRAINING_STATE if state is not None and state.get(k) is None]
        if missing:
            notes.append(f"not resuming: {last} holds no training state ({', '.join(missing)} "
                         "missing: saved for inference, not by fit)")
            state = None
        if state is not None and state.get("config") != config.to_dict():
            notes.append("not resuming: the checkpoint was trained with another configuration")
            state = None
        if retrain and state is not None:
            notes.append("retraining as asked (retrain=True)")
            state = None
    context.barrier()  # every rank has read the file before rank 0 may move it
    if context.is_main:
        for name in (BEST, LAST, HISTORY):
            for tmp in remove_stale_temps(out_dir / name):
                notes.append(f"removed {tmp.name}, left by an interrupted save")
    if state is None and any((out_dir / n).exists() for n in (BEST, LAST, HISTORY)):
        if context.is_main:
            # Keep the previous run's files instead of overwriting them at the first save.
            for name in (BEST, LAST, HISTORY):
                if (out_dir / name).exists():
                    (out_dir / name).replace(out_dir / f"{name}.previous")
        notes.append(f"previous checkpoints kept as *.previous in {out_dir}")
    context.barrier()
    return state, notes


def _wrap(model: nn.Module, device: torch.device, context: DistContext) -> nn.Module:
    """The module the training steps call: the model itself, or DDP around it."""
    if not context.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda" and context.world_size > 1:
        # A few images per GPU make poor BatchNorm statistics; synchronised BatchNorm computes
        # them over the global batch. (gloo has no SyncBatchNorm: on CPUs each rank normalises
        # its own share.)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, config: TrainConfig,
        out_dir: str | Path, *, device: str | torch.device = "auto", num_workers: int = 0,
        checkpoint_every: int = 0, retrain: bool = False, progress: bool = True,
        max_steps: int | None = None, precision: str = "auto",
        context: DistContext | None = None, log=print) -> TrainResult:
    """Train, validate every epoch, keep the best and the last checkpoint; resume when possible.

    Parameters
    ----------
    model : DenseNet121
        Freshly built (its initial weights are overwritten when resuming).
    train_ds, val_ds : CheXpertDataset
        Training and internal-validation items: ``(image [3, S, S], target [C], mask [C], row)``;
        each exposes ``targets`` and ``masks`` arrays [N, C].
    config : TrainConfig
    out_dir : path
        Where ``checkpoint.pt``, ``checkpoint_last.pt`` and ``history.csv`` go.
    device : str or torch.device
        ``auto`` picks CUDA, then MPS, then CPU. CUDA trains channels-last.
    checkpoint_every : int
        Also save the resume point every this many steps (0: at the end of each epoch only).
    retrain : bool
        Start afresh even if a finished or resumable run of the same configuration exists.
    max_steps : int, optional
        Stop (as if interrupted) after this many optimisation steps in this call; for tests and
        for budgeted runs. The resume point is saved first.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Mixed precision on CUDA (:func:`amp_dtype`); ``auto`` is bf16 where supported.
    context : DistContext, optional
        This process's place in a torchrun job (:func:`chexlib.train.distributed.init_from_env`);
        None trains in this process alone. Each rank trains on its share of every global batch
        under DistributedDataParallel; only rank 0 validates, writes files and logs.

    Returns
    -------
    TrainResult
        ``status`` is "reused" when a finished run of this configuration was found.
    """
    context = context or DistContext()
    log = log if context.is_main else _silent
    progress = progress and context.is_main
    out_dir = Path(out_dir)
    world = context.world_size
    if config.batch_size < 2 * world:
        raise ParameterError(
            f"batch_size {config.batch_size} is too small for {world} processes: each needs at "
            f"least 2 images per step for BatchNorm; use batch_size >= {2 * world}")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(device) if isinstance(device, str) else device
    state, notes = _resume_point(out_dir, config, retrain, context)
    for note in notes:
        log(note)
    if state is not None and state.get("best", {}).get("finished"):
        log(f"reusing the finished run in {out_dir} (same configuration; retrain=True to train again)")
        return TrainResult(out_dir / BEST, out_dir / LAST, _history_frame(state["history"]), "reused",
                           notes=notes)
    torch.manual_seed(config.seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    amp = amp_dtype(device, precision)
    optimizer, scheduler, scaler, pos_weight = _new_state(model, config, train_ds, device, amp)
    epoch, step, history, best = 0, 0, [], {"val_auroc": -math.inf, "epoch": -1, "finished": False}
    if state is not None:
        model.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        if scheduler is not None and state.get("scheduler_state"):
            scheduler.load_state_dict(state["scheduler_state"])
        if scaler is not None and state.get("scaler_state"):
            scaler.load_state_dict(state["scaler_state"])
        epoch, step, history, best = state["epoch"], state["step"], state["history"], state["best"]
        restore_rng_state(state["rng"])
        log(f"resuming from {out_dir / LAST}: epoch {epoch + 1}, step {step}")
    net = _wrap(model, device, context)
    if context.distributed:
        log(f"training on {world} process(es), backend {context.backend}, "
            f"{config.batch_size} images per step in all")
    status = "resumed" if state is not None else "trained"
    all_masks = torch.as_tensor(np.asarray(train_ds.masks, dtype=np.float32))
    start, seen, steps_here = time.perf_counter(), 0, 0
    while epoch < config.epochs:
        net.train()
        batches = epoch_batches(len(train_ds), config.batch_size, config.seed, epoch,
                                min_size=2 * world)
        sampler = ShardedBatchSampler(batches, context.rank, world, start=step)
        loader = DataLoader(train_ds, batch_sampler=sampler, num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        running, count = 0.0, 0
        shown = _progress(loader, epoch, config.epochs, progress, step, len(batches))
        for batch, (images, targets, masks, _) in zip(sampler.batches, shown):
            denominator = all_masks[batch].sum().to(device)
            try:
                share = train_step(net, optimizer, to_device(images, device), targets.to(device),
                                   masks.to(device), amp=amp, scaler=scaler,
                                   pos_weight=pos_weight, denominator=denominator,
                                   world_size=world)
            except torch.cuda.OutOfMemoryError as exc:
                # Nothing is saved: the step may have half-updated the weights or the optimizer.
                raise _out_of_memory("training", exc, len(images), config.batch_size, precision,
                                     minimum=2 * world, how="-p batch_size {}",
                                     resume=out_dir / LAST) from exc
            running, count = running + share * len(batch), count + len(batch)
            step, steps_here, seen = step + 1, steps_here + 1, seen + len(batch)
            interrupted = max_steps is not None and steps_here >= max_steps
            if context.is_main and (interrupted or (checkpoint_every and step % checkpoint_every == 0)):
                _save(out_dir / LAST, model, config, optimizer, scheduler, scaler, epoch, step,
                      history, best)
            if interrupted:
                context.barrier()
                log(f"stopped after {steps_here} steps (max_steps); resume point saved")
                return TrainResult(out_dir / BEST, out_dir / LAST, _history_frame(history),
                                   "interrupted", time.perf_counter() - start, notes=notes)
        running = context.sum_float(running, device)  # each rank summed its share of the loss
        row = {"epoch": epoch + 1, "train_loss": running / max(count, 1),
               "lr": optimizer.param_groups[0]["lr"]}
        scores = [math.nan, math.nan]
        if context.is_main:
            scores = list(_validate(model, val_ds, config, device, num_workers, precision).values())
        val_loss, val_auroc = context.broadcast_floats(scores, device)
        row.update({"val_loss": val_loss, "val_auroc": val_auroc})
        history.append(row)
        improved = row["val_auroc"] > best["val_auroc"]
        if improved:
            best = {"val_auroc": row["val_auroc"], "epoch": epoch + 1, "finished": False}
        if scheduler is not None:
            scheduler.step(row["val_auroc"])
        epoch, step = epoch + 1, 0
        stop_early = config.early_stopping and epoch - best["epoch"] >= config.early_stopping
        done = epoch >= config.epochs or bool(stop_early)
        best = {**best, "finished": done}
        if context.is_main:
            if improved:
                _save(out_dir / BEST, model, config, optimizer, scheduler, scaler, epoch, 0,
                      history, {**best, "finished": False})
            _save(out_dir / LAST, model, config, optimizer, scheduler, scaler, epoch, 0, history,
                  best)
            atomic_write_text(out_dir / HISTORY, _history_frame(history).to_csv(index=False))
        log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss "
            f"{row['val_loss']:.4f}, val mean AUROC {row['val_auroc']:.4f}"
            + (" (best)" if improved else ""))
        if stop_early:
            log(f"early stopping: no improvement for {config.early_stopping} epochs")
            break
    context.barrier()
    seconds = time.perf_counter() - start
    return TrainResult(out_dir / BEST, out_dir / LAST, _history_frame(history), status, seconds,
                       seen / seconds if seconds > 0 else math.nan, notes)


def _out_of_memory(what: str, exc: BaseException, images: int, batch_size: int, precision: str,
                   *, minimum: int = 1, how: str, resume: Path | None = None) -> OutOfMemoryError:
    """The error for a batch that did not fit in GPU memory: what to change, what is safe."""
    found = re.search(r"out of memory\. Tried to allocate [\d.]+ \w+", str(exc))
    detail = found.group(0) if found else (str(exc).splitlines() or ["out of memory"])[0][:200]
    if found and str(exc).startswith("CUDA "):
        detail = "CUDA " + detail
    half = max(minimum, batch_size // 2)
    if half < batch_size:
        advice = f"use a smaller batch_size, e.g. {how.format(half)}, and precision auto"
    else:
        advice = (f"batch_size {batch_size} is the smallest possible; use a smaller image_size "
                  "or a GPU with more memory, and precision auto")
    now = "it is already auto" if precision == "auto" else f"this run uses {precision}"
    message = (f"{what}: a batch of {images} images (batch_size={batch_size}) did not fit in "
               f"GPU memory ({detail}); {advice} (mixed precision on CUDA; {now})")
    if resume is not None:
        message += f". {_resume_note(resume)}"
    return OutOfMemoryError(message)


def _resume_note(last: Path) -> str:
    if not last.is_file():
        return f"Nothing was saved yet ({last.name} does not exist): a rerun starts afresh"
    try:
        ckpt = load_checkpoint(last, classes=None, image_size=None)
    except CheckpointError:
        return f"{last} was not changed"
    return (f"Nothing was written: the resume point {last} is intact (epoch {ckpt['epoch'] + 1}, "
            f"step {ckpt['step']}); a rerun with another precision resumes from it, one with "
            f"another batch_size trains afresh and keeps it as {last.name}.previous")


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def _history_frame(history: list[dict]) -> pd.DataFrame:
    columns = ["epoch", "train_loss", "val_loss", "val_auroc", "lr"]
    return pd.DataFrame(history, columns=columns)


def _progress(loader, epoch, epochs, enabled, first, total):
    return progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", initial=first, total=total,
                disable=not enabled, leave=False, mininterval=5)
