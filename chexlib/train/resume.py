"""Resume points: the checkpoints training writes, and whether a run folder's last one resumes.

:func:`_save` writes the model with the whole training state (optimizer, scheduler, scaler,
counters, history, best epoch, configuration, random-number-generator state).
:func:`_resume_point` decides whether ``checkpoint_last.pt`` continues this configuration; when
it does not, the previous run's files are kept as ``*.previous`` instead of being overwritten.
The file names are the run folder's (:class:`chexlib.run.RunFolder`).
"""

from __future__ import annotations

from pathlib import Path

from chexlib.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint
from chexlib.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from chexlib.errors import CheckpointError
from chexlib.files import remove_stale_temps
from chexlib.run import RunFolder
from chexlib.train.config import TrainConfig
from chexlib.train.distributed import DistContext


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
    run = RunFolder(out_dir)
    files = (run.checkpoint, run.last_checkpoint, run.history)
    last = run.last_checkpoint
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
        for path in files:
            for tmp in remove_stale_temps(path):
                notes.append(f"removed {tmp.name}, left by an interrupted save")
    if state is None and any(path.exists() for path in files):
        if context.is_main:
            # Keep the previous run's files instead of overwriting them at the first save.
            for path in files:
                if path.exists():
                    path.replace(path.with_name(f"{path.name}.previous"))
        notes.append(f"previous checkpoints kept as *.previous in {out_dir}")
    context.barrier()
    return state, notes

