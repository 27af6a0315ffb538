"""Command line: train a run's model outside the notebooks.

::

    python -m chexlib.train --params FILE.yaml [--preset NAME] [-p KEY VALUE ...]
    torchrun --standalone --nproc_per_node N -m chexlib.train --params FILE.yaml

The parameters are the notebooks' (defaults <- preset <- files <- ``-p``; relative paths resolve
at the repository). Standalone it trains in this process; under torchrun every process trains its
share of each global batch with DistributedDataParallel (nccl on GPUs, gloo on CPUs). Either way
the run folder ends up with the files notebook 02 would write, so notebooks 03-06 follow
unchanged. Only rank 0 generates the phantom, builds the image cache first, writes files and logs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from chexlib import params as P
from chexlib.errors import ChexlibError
from chexlib.run import RunFolder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chexlib.train",
                                     description="Train a run's DenseNet-121 (also under torchrun).")
    parser.add_argument("--params", action="append", default=[], metavar="FILE.yaml",
                        help="YAML file of parameters (may repeat; later files win)")
    parser.add_argument("--preset", default="default",
                        help=f"parameter preset under the files: {', '.join(P.preset_names())}")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="one parameter, value parsed as YAML (may repeat; wins over files)")
    return parser


def _rank0_first(context, build: Callable):
    """Rank 0 builds (generates data, fills caches, downloads weights), then the others reuse."""
    if context.is_main:
        value = build()
        context.barrier()
    else:
        context.barrier()
        value = build()
    return value


def _logger(run_dir: Path, is_main: bool) -> Callable[[str], None]:
    if not is_main:
        return lambda *args, **kwargs: None
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = RunFolder(run_dir).train_log

    def log(message: str) -> None:
        print(message, flush=True)
        with open(log_file, "a", encoding="utf-8") as f:  # a log grows line by line
            f.write(message + "\n")

    return log


def train(params: dict) -> int:
    """Train with resolved parameters; returns the exit status."""
    from chexlib.project import absolute_paths, ensure_data, project_root
    from chexlib.rng import seed_everything
    from chexlib.runlock import run_lock
    from chexlib.train import launch
    from chexlib.train.distributed import init_from_env, shutdown

    params = absolute_paths(params, project_root())
    context, device = init_from_env(params["device"])
    run_dir, data_root = Path(params["run_dir"]), Path(params["data_root"])
    cache_dir = Path(params["cache_dir"]) if params["cache_dir"] else data_root / ".cache"
    log = _logger(run_dir, context.is_main)
    if not context.is_main:
        warnings.simplefilter("ignore")  # rank 0 shows the same warnings once
    finished = False
    stack = contextlib.ExitStack()
    try:
        # Rank 0 (the only writer) holds the run folder's lock; a second job there refuses.
        stack.enter_context(run_lock(run_dir, what="python -m chexlib.train")
                            if context.is_main else contextlib.nullcontext())
        log(f"rank {context.rank} of {context.world_size} on {device}; run folder {run_dir}")
        seed_everything(params["seed"])
        _rank0_first(context, lambda: ensure_data(params, data_root))
        train_ds, val_ds = _rank0_first(context, lambda: launch.training_data(
            params, data_root, cache_dir, progress=context.is_main))
        # DDP starts every rank from rank 0's weights: the others need not find (or download)
        # the starting weights again.
        model = launch.build_model(params if context.is_main else {**params, "weights": "none"})
        result = launch.train_in_process(params, model, train_ds, val_ds, run_dir, device=device,
                                         context=context, log=log)
        if context.is_main:
            launch.write_result(run_dir, result)
            log(f"{result.status}: best checkpoint {result.best_path}")
        finished = True
    finally:
        stack.close()
        shutdown(context, wait=finished)  # after an error, waiting for the other ranks would hang
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        overrides = {key: P.parse_override(value) for key, value in args.p}
        params = P.resolve(args.preset, files=tuple(args.params), overrides=overrides)
        return train(params)
    except ChexlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
