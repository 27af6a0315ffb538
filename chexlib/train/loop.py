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

The loop's parts live beside it: the configuration and result (:mod:`chexlib.train.config`), the
batches, loss and step (:mod:`chexlib.train.steps`), prediction (:mod:`chexlib.train.prediction`),
resume points (:mod:`chexlib.train.resume`), devices and precision (:mod:`chexlib.device`).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from chexlib.checkpoint import restore_rng_state
from chexlib.device import amp_dtype, autocast_name, channels_last, select_device, to_device
from chexlib.errors import ParameterError
from chexlib.files import atomic_write_text
from chexlib.metrics import auroc
from chexlib.progress import progress_bar
from chexlib.run import RunFolder
from chexlib.train.config import TrainConfig, TrainResult
from chexlib.train.distributed import DistContext, ShardedBatchSampler
from chexlib.train.out_of_memory import _out_of_memory
from chexlib.train.prediction import predict
from chexlib.train.resume import _resume_point, _save
from chexlib.train.steps import epoch_batches, masked_bce, positive_weights, train_step


def _validate(model, dataset, config, device, num_workers, precision) -> dict[str, float]:
    logits, probs = predict(model, dataset, batch_size=max(64, config.batch_size), device=device,
                            num_workers=num_workers, precision=precision)
    targets = torch.as_tensor(dataset.targets)
    masks = torch.as_tensor(dataset.masks)
    loss = masked_bce(torch.as_tensor(logits), targets, masks).item()
    per_class = auroc(dataset.targets, probs)
    mean = float(np.nanmean(per_class)) if np.isfinite(per_class).any() else math.nan
    return {"val_loss": loss, "val_auroc": mean}


#: The share of the ``cosine`` schedule's steps spent warming up.
WARMUP = 0.05


def cosine_factor(step: int, total: int, warmup: float = WARMUP) -> float:
    """The ``cosine`` schedule's learning-rate factor at optimisation ``step`` of ``total``.

    A linear warm-up from ``1 / warmup_steps`` to 1 over the first ``warmup`` share of the steps
    (a network trained from scratch with Adam at a high rate diverges without it), then a
    half-cosine to 0 at the last step (Loshchilov & Hutter 2017, SGDR, without restarts).
    """
    warmup_steps = max(1, round(warmup * total))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _new_state(model, config, train_ds, device, amp, world: int = 1):
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    scheduler = None
    if config.lr_schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1,
                                                               patience=1)
    elif config.lr_schedule == "cosine":
        per_epoch = len(epoch_batches(len(train_ds), config.batch_size, config.seed, 0,
                                      min_size=2 * world))
        total = per_epoch * config.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, total))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    pos_weight = positive_weights(train_ds.targets, train_ds.masks).to(device) if config.pos_weight else None
    return optimizer, scheduler, scaler, pos_weight


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
        ``auto`` picks CUDA, then MPS, then CPU. CUDA and CPU bf16 train channels-last.
    checkpoint_every : int
        Also save the resume point every this many steps (0: at the end of each epoch only).
    retrain : bool
        Start afresh even if a finished or resumable run of the same configuration exists.
    max_steps : int, optional
        Stop (as if interrupted) after this many optimisation steps in this call; for tests and
        for budgeted runs. The resume point is saved first.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype (:func:`chexlib.device.amp_dtype`): ``auto`` is bf16 on GPUs that support
        it and on CPUs with native bf16, fp16 on older GPUs, float32 elsewhere. bf16 trains
        channels-last (:func:`chexlib.device.channels_last`). The dtype is recorded in the
        configuration (``TrainConfig.autocast``).
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
    run = RunFolder(out_dir)
    world = context.world_size
    if config.batch_size < 2 * world:
        raise ParameterError(
            f"batch_size {config.batch_size} is too small for {world} processes: each needs at "
            f"least 2 images per step for BatchNorm; use batch_size >= {2 * world}")
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    device = select_device(device) if isinstance(device, str) else device
    amp = amp_dtype(device, precision)
    # The autocast dtype determines the weights: it is part of the configuration.
    config = replace(config, autocast=autocast_name(amp))
    state, notes = _resume_point(out_dir, config, retrain, context)
    for note in notes:
        log(note)
    if state is not None and state.get("best", {}).get("finished"):
        log(f"reusing the finished run in {out_dir} (same configuration; retrain=True to train again)")
        return TrainResult(run.checkpoint, run.last_checkpoint, _history_frame(state["history"]),
                           "reused", notes=notes)
    torch.manual_seed(config.seed)
    model.to(device)
    fast_format = torch.channels_last if channels_last(device, amp) else None
    if fast_format is not None:
        model.to(memory_format=fast_format)
    if amp is not None:
        log(f"training in {config.autocast} autocast" + (", channels-last" if fast_format else ""))
    optimizer, scheduler, scaler, pos_weight = _new_state(model, config, train_ds, device, amp,
                                                          world)
    per_step = config.lr_schedule == "cosine"  # stepped every batch; plateau every epoch
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
        log(f"resuming from {run.last_checkpoint}: epoch {epoch + 1}, step {step}")
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
                share = train_step(net, optimizer, to_device(images, device, fast_format),
                                   targets.to(device),
                                   masks.to(device), amp=amp, scaler=scaler,
                                   pos_weight=pos_weight, denominator=denominator,
                                   world_size=world)
            except torch.cuda.OutOfMemoryError as exc:
                # Nothing is saved: the step may have half-updated the weights or the optimizer.
                raise _out_of_memory("training", exc, len(images), config.batch_size, precision,
                                     minimum=2 * world, how="-p batch_size {}",
                                     resume=run.last_checkpoint) from exc
            running, count = running + share * len(batch), count + len(batch)
            if per_step:
                scheduler.step()
            step, steps_here, seen = step + 1, steps_here + 1, seen + len(batch)
            interrupted = max_steps is not None and steps_here >= max_steps
            if context.is_main and (interrupted or (checkpoint_every and step % checkpoint_every == 0)):
                _save(run.last_checkpoint, model, config, optimizer, scheduler, scaler, epoch,
                      step, history, best)
            if interrupted:
                context.barrier()
                log(f"stopped after {steps_here} steps (max_steps); resume point saved")
                _back_to_nchw(model, fast_format)
                return TrainResult(run.checkpoint, run.last_checkpoint, _history_frame(history),
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
        if scheduler is not None and not per_step:
            scheduler.step(row["val_auroc"])
        epoch, step = epoch + 1, 0
        stop_early = config.early_stopping and epoch - best["epoch"] >= config.early_stopping
        done = epoch >= config.epochs or bool(stop_early)
        best = {**best, "finished": done}
        if context.is_main:
            if improved:
                _save(run.checkpoint, model, config, optimizer, scheduler, scaler, epoch, 0,
                      history, {**best, "finished": False})
            _save(run.last_checkpoint, model, config, optimizer, scheduler, scaler, epoch, 0,
                  history, best)
            atomic_write_text(run.history, _history_frame(history).to_csv(index=False))
        log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss "
            f"{row['val_loss']:.4f}, val mean AUROC {row['val_auroc']:.4f}"
            + (" (best)" if improved else ""))
        if stop_early:
            log(f"early stopping: no improvement for {config.early_stopping} epochs")
            break
    context.barrier()
    _back_to_nchw(model, fast_format)
    seconds = time.perf_counter() - start
    return TrainResult(run.checkpoint, run.last_checkpoint, _history_frame(history), status,
                       seconds, seen / seconds if seconds > 0 else math.nan, notes)


def _back_to_nchw(model: nn.Module, fast_format) -> None:
    """On the CPU, hand the model back in the default memory format: explanations run it in
    float32, where channels-last gains little (CUDA keeps it, as it always did)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    if fast_format is not None and on_cpu:
        model.to(memory_format=torch.contiguous_format)


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0."""


def _history_frame(history: list[dict]) -> pd.DataFrame:
    columns = ["epoch", "train_loss", "val_loss", "val_auroc", "lr"]
    return pd.DataFrame(history, columns=columns)


def _progress(loader, epoch, epochs, enabled, first, total):
    return progress_bar(loader, desc=f"epoch {epoch + 1}/{epochs}", initial=first, total=total,
                disable=not enabled, leave=False, mininterval=5)
