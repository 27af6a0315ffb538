"""Training under torchrun: DDP with gloo on this CPU, rank 0 alone writing, 1 process = in-process.

The multi-process tests start real ``torchrun`` jobs (``python -m torch.distributed.run``) on the
smoke preset. Which process wrote what is recorded by an audit hook (``sys.addaudithook``)
installed in every child through a ``sitecustomize`` module on ``PYTHONPATH``: the file opens for
writing, renames, removals and folder creations of each rank, independent of chexlib's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from chexlib import params as P
from chexlib.checkpoint import load_checkpoint
from chexlib.errors import ParameterError
from chexlib.run import RunFolder
from chexlib.train import epoch_batches, fit, masked_bce, train_step
from chexlib.train.distributed import DistContext, ShardedBatchSampler, shard
from chexlib.train.launch import TrainingFailed, train_with_torchrun

ROOT = Path(__file__).resolve().parents[1]

AUDIT_HOOK = '''
import os, sys
_base = os.environ.get("CHEXLIB_TEST_AUDIT")
if _base:
    _rank = os.environ.get("RANK", "main")
    _busy = [False]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    def _hook(event, args):
        if _busy[0]:
            return
        target = None
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str) and any(c in mode for c in "wxa+"):
                target = path
            elif mode is None and isinstance(flags, int) and flags & _WRITE:
                target = path
        elif event == "os.rename":
            target = args[1]
        elif event in ("os.remove", "os.mkdir", "os.rmdir"):
            target = args[0]
        if target is None or isinstance(target, int):
            return
        if event == "os.mkdir" and os.path.isdir(target):
            return  # mkdir(exist_ok=True) of an existing folder writes nothing
        _busy[0] = True
        try:
            with open(f"{_base}.{_rank}", "a") as f:
                f.write(f"{event}\\t{os.fsdecode(target)}\\n")
        finally:
            _busy[0] = False
    with open(f"{_base}.{_rank}", "a") as f:
        f.write("start\\t-\\n")
    sys.addaudithook(_hook)
'''


def _smoke(tmp: Path, **over) -> dict:
    values = P.resolve("smoke", overrides={
        "data_root": str(tmp / "phantom"), "cache_dir": str(tmp / "cache"),
        "run_dir": str(tmp / "run"), "weights": "none", **over})
    return values


def _child_env(tmp: Path) -> dict:
    hook_dir = tmp / "hook"
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), str(ROOT)])
    env["CHEXLIB_TEST_AUDIT"] = str(tmp / "audit")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _writes(tmp: Path, rank: str, inside: Path) -> list[str]:
    log = Path(f"{tmp / 'audit'}.{rank}")
    assert log.is_file(), f"process {rank} never started (no {log})"
    lines = [line.split("\t") for line in log.read_text().splitlines()]
    return [path for event, path in lines
            if event != "start" and Path(path).resolve().is_relative_to(inside.resolve())]


@pytest.mark.slow
def test_notebook_02_trains_with_two_gloo_processes_and_notebook_03_evaluates(tmp_path):
    """Notebook 02 launches torchrun (2 CPU processes, gloo); only rank 0 writes into the run
    folder; notebook 03 then evaluates the checkpoint unchanged."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "chexlib", "run", "--preset", "smoke", "--quiet",
           "--notebooks", "02,03", "-p", "run_dir", str(run),
           "-p", "data_root", str(tmp_path / "phantom"), "-p", "cache_dir", str(tmp_path / "cache"),
           "-p", "weights", "none", "-p", "train_launcher", "torchrun", "-p", "train_processes", "2"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env=_child_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    log = RunFolder(run).train_log.read_text()
    assert "training on 2 process(es), backend gloo, 8 images per step in all" in log
    assert "rank 0 of 2" in log and "rank 1" not in log
    result = json.loads(RunFolder(run).train_result.read_text())
    assert result["status"] == "trained" and result["images_per_second"] > 0
    history = pd.read_csv(RunFolder(run).history)
    assert history["epoch"].tolist() == [1] and np.isfinite(history.drop(columns="epoch")).all().all()

    rank0, rank1 = _writes(tmp_path, "0", run), _writes(tmp_path, "1", run)
    assert rank1 == [], f"rank 1 wrote into the run folder: {rank1}"
    written = {Path(p).resolve() for p in rank0}
    folder = RunFolder(run)
    assert {p.resolve() for p in (folder.checkpoint, folder.last_checkpoint, folder.history,
                                  folder.train_log, folder.train_result)} <= written
    assert _writes(tmp_path, "1", tmp_path / "cache") == []  # rank 0 built the image cache

    state = load_checkpoint(RunFolder(run).checkpoint, image_size=64)
    assert state["best"]["epoch"] == 1
    nb03 = RunFolder(run).notebook("03_evaluation.ipynb")
    assert nb03.is_file()
    predictions = pd.read_csv(RunFolder(run).predictions)
    assert len(predictions) == P.load_preset("smoke")["phantom_n_valid"]
    assert folder.metrics.is_file() and folder.outcomes.is_file()


@pytest.mark.slow
def test_one_process_torchrun_equals_in_process_training(tmp_path):
    """torchrun --nproc_per_node 1 (DDP, gloo) ends with exactly the weights of the in-process
    run: the distributed code path adds nothing to the arithmetic."""
    from chexlib.project import ensure_data
    from chexlib.rng import seed_everything
    from chexlib.train.launch import build_model, train_in_process, training_data

    params = _smoke(tmp_path, run_dir=str(tmp_path / "inproc"))
    data_root, cache = Path(params["data_root"]), Path(params["cache_dir"])
    ensure_data(params, data_root)
    seed_everything(params["seed"])
    train_ds, val_ds = training_data(params, data_root, cache, progress=False)
    inproc = train_in_process(params, build_model(params), train_ds, val_ds,
                              tmp_path / "inproc", log=lambda s: None)
    assert inproc.status == "trained"

    params_file = tmp_path / "torchrun.yaml"
    import yaml

    params_file.write_text(yaml.safe_dump({**params, "run_dir": str(tmp_path / "torchrun")}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "chexlib.train", "--params", str(params_file)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=_child_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training on 1 process(es), backend gloo" in RunFolder(tmp_path / "torchrun").train_log.read_text()

    a = torch.load(RunFolder(tmp_path / "inproc").checkpoint, weights_only=True)["model_state"]
    b = torch.load(RunFolder(tmp_path / "torchrun").checkpoint, weights_only=True)["model_state"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
    pd.testing.assert_frame_equal(inproc.history,
                                  pd.read_csv(RunFolder(tmp_path / "torchrun").history))


@pytest.mark.slow
def test_a_failing_torchrun_job_says_why(tmp_path):
    params = _smoke(tmp_path, dataset="chexpert", data_root=str(tmp_path / "no-such-folder"),
                    train_processes=2)
    with pytest.raises(TrainingFailed, match=r"exited with status \d+:\nerror: .*no-such-folder.train.csv does not exist"):
        train_with_torchrun(params, tmp_path / "run", log=lambda s: None)


# --------------------------------------------------------------------------------------------
# the pieces, without processes
# --------------------------------------------------------------------------------------------


def test_sharded_batches_cover_each_global_batch_once_in_order():
    batches = epoch_batches(53, 16, seed=3, epoch=1, min_size=6)
    assert [len(b) for b in batches] == [16, 16, 16]  # the last 5 images cannot feed 3 ranks x 2
    for world in (1, 2, 3):
        samplers = [ShardedBatchSampler(batches, rank, world, start=1) for rank in range(world)]
        assert all(len(s) == 2 for s in samplers)
        for step, parts in enumerate(zip(*samplers), start=1):
            assert [i for part in parts for i in part] == batches[step]  # contiguous, rank order
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(list(range(5)), 0, 2) + shard(list(range(5)), 1, 2) == [0, 1, 2, 3, 4]
    with pytest.raises(ParameterError, match="cannot be split between 4 processes"):
        ShardedBatchSampler([[1, 2, 3]], rank=0, world_size=4)
    with pytest.raises(ParameterError, match="rank 2 is outside 0..1"):
        ShardedBatchSampler(batches, rank=2, world_size=2)


def test_sharded_loss_makes_the_averaged_gradient_the_global_batch_gradient():
    """What DDP does (average the ranks' gradients) applied to train_step's scaled shares gives
    the update of one step on the whole batch, also with an uneven split and masked entries."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(7, 5, generator=gen)
    targets = (torch.rand(7, 3, generator=gen) > 0.5).float()
    masks = (torch.rand(7, 3, generator=gen) > 0.3).float()
    base = nn.Linear(5, 3)

    def update(rows, world):
        model = nn.Linear(5, 3)
        model.load_state_dict(base.state_dict())
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)
        train_step(model, sgd, x[rows], targets[rows], masks[rows],
                   denominator=masks.sum(), world_size=world)
        return torch.cat([(p.detach() - q.detach()).flatten()
                          for p, q in zip(model.parameters(), base.parameters())])

    whole = update(list(range(7)), 1)
    averaged = (update([0, 1, 2], 2) + update([3, 4, 5, 6], 2)) / 2
    torch.testing.assert_close(averaged, whole, rtol=1e-5, atol=1e-6)
    assert whole.abs().sum() > 0
    # denominator None is the plain masked mean
    logits = base(x)
    plain = masked_bce(logits, targets, masks)
    expected = nn.functional.binary_cross_entropy_with_logits(logits[masks > 0], targets[masks > 0])
    torch.testing.assert_close(plain, expected)


def test_batch_size_must_leave_two_images_per_process(tmp_path):
    from chexlib.train import TrainConfig

    config = TrainConfig(epochs=1, batch_size=3, image_size=32, weights="none")
    with pytest.raises(ParameterError, match="batch_size 3 is too small for 2 processes.*>= 4"):
        fit(nn.Linear(1, 1), None, None, config, tmp_path, device="cpu",
            context=DistContext(rank=0, world_size=2))


@pytest.mark.slow
def test_gpu_benchmark_script_runs_here(tmp_path):
    """benchmarks/gpu_throughput.py is prepared for a GPU machine; here it must at least run its
    float32 rows on the CPU and write its figures."""
    out = tmp_path / "gpu.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--size", "48",
           "--batch", "4", "--steps", "1", "--explain-batch", "2", "--repeat", "1",
           "--device", "cpu", "--json", str(out)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["train_fp32"]["images_per_s"] > 0 and np.isfinite(report["train_fp32"]["first_loss"])
    assert all(report["explain"][k] > 0 for k in ("forward", "lrp", "gradcam"))
