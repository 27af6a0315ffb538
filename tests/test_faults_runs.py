"""Fault matrix, run level: processes killed mid-write, two runs in one folder, damaged stores.

Each test is one row of the README table "What happens when ...". Kills are real: a child
process does the work and is stopped with SIGKILL at the moment named in the test (a patched
``os.fsync`` parks it in the middle of a write where needed); the parent then checks that nothing
half-written is read as valid and that the next run resumes or recomputes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from chexlib.checkpoint import load_checkpoint
from chexlib.data import read_labels
from chexlib.data.cache import ImageCache
from chexlib.data.images import load_grayscale, resolve_image_path
from chexlib.errors import RunFolderBusyError
from chexlib.explain.store import CorruptMapError, MapStore
from chexlib.run import RunFolder
from chexlib.runlock import HELD_ENV

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
IMAGES = [f"CheXpert-v1.0-small/valid/patient{64541 + i}/study1/view1_frontal.jpg" for i in range(10)]

# A child that parks in os.fsync number ``PARK_AT`` (after writing a temp file in full, before
# renaming it into place), announcing it by creating the file ``MARKER``.
PARK = """
import os, sys, time
_real_fsync, _calls = os.fsync, [0]
def _parking_fsync(fd):
    _real_fsync(fd)
    _calls[0] += 1
    if _calls[0] == PARK_AT:
        open(MARKER, "w").close()
        time.sleep(600)
os.fsync = _parking_fsync
"""

TRAIN = """
import sys, torch
sys.path.insert(0, TESTS)
torch.set_num_threads(1)
from support import TensorDataset, train_config
from chexlib.model import densenet121
from chexlib.train import fit
torch.manual_seed(0)
fit(densenet121(num_classes=14, weights="none"), TensorDataset(), TensorDataset(n=8, seed=1),
    train_config(epochs=3), OUT, device="cpu", progress=False, checkpoint_every=1, log=print)
"""


def _child(code: str, **names) -> subprocess.Popen:
    header = "".join(f"{k} = {v!r}\n" for k, v in names.items())
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen([sys.executable, "-c", header + textwrap.dedent(code)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, child: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if child.poll() is not None:
            raise AssertionError(f"the child ended before the kill: {child.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError("the child never reached the point of the kill")
        time.sleep(0.02)


def _kill(child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _train_in_process(out: Path):
    sys.path.insert(0, str(TESTS))
    from support import TensorDataset, train_config

    from chexlib.model import densenet121
    from chexlib.train import fit

    torch.manual_seed(0)
    return fit(densenet121(num_classes=14, weights="none"), TensorDataset(),
               TensorDataset(n=8, seed=1), train_config(epochs=3), out, device="cpu",
               progress=False, checkpoint_every=1, log=lambda s: None)


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model_state"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The checkpoint of the same training run without any kill."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert _train_in_process(out).status == "trained"
    return RunFolder(out).checkpoint


# --------------------------------------------------------------------------------------------
# SIGKILL mid-run
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_during_training_resumes_to_the_same_weights(tmp_path, uninterrupted):
    out = tmp_path / "run"
    child = _child(TRAIN, TESTS=str(TESTS), OUT=str(out))
    # Killed mid-epoch 2: the first epoch's history exists, then one more step's resume point.
    _wait_for(lambda: RunFolder(out).history.exists(), child)
    first = RunFolder(out).last_checkpoint.stat().st_mtime_ns
    _wait_for(lambda: RunFolder(out).last_checkpoint.stat().st_mtime_ns != first, child)
    _kill(child)
    state = load_checkpoint(RunFolder(out).last_checkpoint, image_size=32)
    assert state["epoch"] == 1 and state["step"] >= 1  # a mid-epoch resume point
    result = _train_in_process(out)
    assert result.status == "resumed"
    assert _same_weights(RunFolder(out).checkpoint, uninterrupted)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_kill_during_checkpoint_saving_keeps_the_last_good_checkpoint(tmp_path, uninterrupted):
    out, marker = tmp_path / "run", tmp_path / "parked"
    # fsync 1: the first step's resume point; fsync 2: the second's, written but not renamed.
    child = _child(PARK + TRAIN, PARK_AT=2, MARKER=str(marker), TESTS=str(TESTS), OUT=str(out))
    _wait_for(marker.exists, child)
    _kill(child)
    torn = list(out.glob(".checkpoint_last.pt.*.tmp"))
    assert len(torn) == 1  # killed mid-save indeed
    state = load_checkpoint(RunFolder(out).last_checkpoint, image_size=32)
    assert (state["epoch"], state["step"]) == (0, 1)  # the last good one, intact
    result = _train_in_process(out)
    assert result.status == "resumed"
    assert any("left by an interrupted save" in note for note in result.notes)
    assert not torn[0].exists()
    assert _same_weights(RunFolder(out).checkpoint, uninterrupted)


STORE = """
import numpy as np
from chexlib.explain.store import MapStore
rng = np.random.default_rng(0)
MapStore(RUN).fill("lrp", IMAGES, lambda positions: rng.normal(size=(len(positions), 14, 8, 8)),
                   batch_size=2)
"""


def test_kill_during_heatmap_storing_leaves_only_complete_maps(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "parked"
    # fsync 1: the index; 2-4: three maps; 5: the fourth map, written but never renamed.
    child = _child(PARK + STORE, PARK_AT=5, MARKER=str(marker), RUN=str(run), IMAGES=IMAGES)
    _wait_for(marker.exists, child)
    _kill(child)
    store = MapStore(run)
    assert len(list(RunFolder(run).maps("lrp").glob(".*.tmp"))) == 1
    assert store.images("lrp") == sorted(Path(p).parent.parent.name + "_study1_view1_frontal"
                                         for p in IMAGES[:3])
    computed = []

    def compute(positions):
        computed.extend(positions)
        return np.ones((len(positions), 14, 8, 8))

    assert store.fill("lrp", IMAGES, compute) == 7 and computed == list(range(3, 10))
    assert all(store.load("lrp", image).shape == (14, 8, 8) for image in IMAGES)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    from chexlib.phantom import generate

    root = tmp_path_factory.mktemp("phantom-smoke")
    generate(root, n_train=60, n_valid=20, seed=0, workers=1, progress=False)
    return root


def _series(run: Path, data: Path) -> list[str]:
    return [sys.executable, "-m", "chexlib", "run", "--preset", "smoke", "--quiet",
            "--notebooks", "01", "-p", "run_dir", str(run), "-p", "data_root", str(data)]


def _processes_holding(run: Path) -> list[int]:
    """Pids of live processes whose environment says they work for ``run``'s series."""
    wanted = f"{HELD_ENV}={run.resolve()}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and wanted in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")
def test_kill_during_a_papermill_run_then_the_rerun_completes(tmp_path, smoke_data):
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    child = subprocess.Popen(_series(run, smoke_data), cwd=ROOT, env=env, text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    executed = RunFolder(run).notebook("01_data_distribution.ipynb")
    _wait_for(executed.exists, child)  # papermill has started the notebook
    _kill(child)
    deadline = time.monotonic() + 30  # its kernel notices the dead parent and exits
    while _processes_holding(run) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_holding(run) == [], "a kernel of the killed run is still writing"
    again = subprocess.run(_series(run, smoke_data), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
    assert nb.metadata["papermill"]["exception"] is None


# --------------------------------------------------------------------------------------------
# two runs, one folder
# --------------------------------------------------------------------------------------------

HOLD = """
import time
from chexlib.runlock import run_lock
with run_lock(RUN, what="a test run"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_refuses(tmp_path, smoke_data):
    from chexlib import params as P
    from chexlib.session import start

    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    holder = subprocess.Popen([sys.executable, "-c", f"RUN = {str(run)!r}\n" + HOLD], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run.iterdir()) if run.exists() else []
        series = subprocess.run(_series(run, smoke_data), cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=120, check=False)
        assert series.returncode == 2
        assert f"run folder {run.resolve()} is in use by a test run, pid {holder.pid}" in series.stderr
        training = subprocess.run(
            [sys.executable, "-m", "chexlib.train", "--preset", "smoke", "-p", "run_dir", str(run),
             "-p", "data_root", str(smoke_data)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert training.returncode == 2 and "is in use by a test run" in training.stderr
        params = P.resolve("smoke", overrides={"run_dir": str(run), "data_root": str(smoke_data)})
        with pytest.raises(RunFolderBusyError, match="is in use by a test run"):
            start(params)  # a notebook opened by hand
        assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # A killed holder leaves no stale lock: the folder is free at once.
    session = start(P.resolve("smoke", overrides={"run_dir": str(run),
                                                  "data_root": str(smoke_data)}))
    assert session.run_dir == run


# --------------------------------------------------------------------------------------------
# damaged between notebooks
# --------------------------------------------------------------------------------------------


def _flip_byte(path: Path, offset_fraction: float = 0.6) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped_byte", "deleted_map", "truncated_map",
                                    "garbage_index", "deleted_store"])
def test_heatmap_store_damaged_between_notebooks_is_recomputed(tmp_path, damage):
    store = MapStore(tmp_path)
    for image in IMAGES[:3]:
        store.save("lrp", image, np.full((14, 8, 8), 2.0))
    target = store.path("lrp", IMAGES[1])
    if damage == "flipped_byte":
        _flip_byte(target)  # same size, one value changed: only the checksum can tell
        with pytest.raises(CorruptMapError, match="checksum"):
            store.load("lrp", IMAGES[1])
    elif damage == "deleted_map":
        target.unlink()
    elif damage == "truncated_map":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "garbage_index":
        (RunFolder(tmp_path).maps("lrp") / "index.json").write_text("{not json")
    else:
        import shutil

        shutil.rmtree(RunFolder(tmp_path).maps_dir)
    calls = []

    def compute():
        calls.append(1)
        return np.full((14, 8, 8), 3.0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = store.get_or_compute("lrp", IMAGES[1], compute)
    assert calls == [1] and np.all(maps == 3.0)  # recomputed, the damaged one never returned
    if damage == "garbage_index":
        assert any("index of method 'lrp'" in str(w.message) for w in caught)
    assert np.all(store.get_or_compute("lrp", IMAGES[1], compute) == 3.0) and calls == [1]


@pytest.mark.parametrize("damage", ["flipped_byte", "deleted_array", "truncated_array",
                                    "garbage_metadata"])
def test_image_cache_damaged_between_notebooks_is_rebuilt(tmp_path, smoke_data, damage):
    labels = read_labels(smoke_data / "valid.csv")
    cache = ImageCache.open_or_build(smoke_data, labels, 32, tmp_path / "cache", progress=False)
    if damage == "flipped_byte":
        _flip_byte(cache.path)  # same size and header: only the checksums can tell
    elif damage == "deleted_array":
        cache.path.unlink()
    elif damage == "truncated_array":
        cache.path.write_bytes(cache.path.read_bytes()[:5000])
    else:
        cache.path.with_suffix(".json").write_text("{not json")
    again = ImageCache.open_or_build(smoke_data, labels, 32, tmp_path / "cache", progress=False)
    assert again.rebuilt, again.reason
    if damage == "flipped_byte":
        assert "checksum" in again.reason
    for row in range(len(labels)):
        expected = load_grayscale(resolve_image_path(smoke_data, labels["Path"].iloc[row]), 32)
        np.testing.assert_array_equal(again.image(row), expected)


def test_large_image_cache_is_spot_checked_with_its_last_chunk_always(tmp_path, smoke_data,
                                                                      monkeypatch):
    """Above VERIFY_ALL_BYTES an open checks VERIFY_SAMPLE random chunks and the last one."""
    import chexlib.data.cache.checksums as C

    monkeypatch.setattr(C, "DIGEST_ROWS", 4)  # 20 rows: 5 chunks
    labels = read_labels(smoke_data / "valid.csv")
    cache = ImageCache.open_or_build(smoke_data, labels, 32, tmp_path / "cache", progress=False)
    assert len(cache.meta["digests"]) == 5
    monkeypatch.setattr(C, "VERIFY_ALL_BYTES", 0)
    monkeypatch.setattr(C, "VERIFY_SAMPLE", 1)
    arr = np.load(cache.path, mmap_mode="r+")
    arr[18, 5, 5] ^= 0xFF  # a pixel of the last chunk
    arr.flush()
    del arr
    again = ImageCache.open_or_build(smoke_data, labels, 32, tmp_path / "cache", progress=False)
    assert again.rebuilt and "rows 16-19 do not match their checksum" in again.reason
