"""chexlib.checkpoint: round trips, atomic saves, refusals and the random-generator state.

References are the live objects a checkpoint was made from (their tensors cloned before saving),
torch's own ``torch.load(weights_only=True)``, and random numbers drawn right after a capture.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

import chexlib.files
from chexlib.checkpoint import (
    FORMAT_VERSION,
    capture_rng_state,
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from chexlib.errors import CheckpointError, MissingFileError, ParameterError
from chexlib.model import DenseNet121
from chexlib.observations import OBSERVATIONS

IMAGE_SIZE = 64




def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def trained():
    """A model, Adam, a scheduler and a grad scaler after two training steps."""
    torch.manual_seed(0)
    model = DenseNet121()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0, growth_interval=1)
    target = torch.zeros(2, 14)
    target[0, 2] = 1
    for seed in range(2):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(images(seed)), target)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    return model, optimizer, scheduler, scaler


def save(path, model, **kwargs):
    kwargs.setdefault("classes", OBSERVATIONS)
    kwargs.setdefault("image_size", IMAGE_SIZE)
    kwargs.setdefault("uncertainty_policy", "ones")
    return save_checkpoint(path, model, **kwargs)


def clone_state(state: dict) -> dict:
    """Deep copy of a (possibly nested) state dict, tensors cloned."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: clone_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(clone_state(v) for v in state)
    return state


def assert_same(a, b, where="state"):
    """Nested equality, tensors compared exactly (dtype and values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# ---------------------------------------------------------------- round trip


def test_round_trip_restores_everything(tmp_path, trained):
    model, optimizer, scheduler, scaler = trained
    expected_model = clone_state(model.state_dict())
    expected_optimizer = clone_state(optimizer.state_dict())
    history = [
        {"epoch": 1, "loss": np.float32(0.5), "auroc": np.array([0.5, 0.75])},
        {"epoch": 2, "loss": 0.25, "auroc": [0.6, 0.8]},
    ]
    path = save(
        tmp_path / "ck" / "last.ckpt", model, optimizer=optimizer, scheduler=scheduler,
        scaler=scaler, epoch=2, step=40, history=history, best={"epoch": 2, "auroc": 0.7},
        config={"lr": 1e-3, "data": tmp_path, "seed": np.int64(3)},
        normalization={"mean": [0.5] * 3, "std": [0.25] * 3},
    )  # fmt: skip
    assert path == tmp_path / "ck" / "last.ckpt"
    ckpt = load_checkpoint(path, image_size=IMAGE_SIZE)

    assert ckpt["format"] == "chexlib-checkpoint" and ckpt["format_version"] == 1
    assert ckpt["arch"] == "densenet121" and ckpt["classes"] == list(OBSERVATIONS)
    assert ckpt["image_size"] == 64 and ckpt["uncertainty_policy"] == "ones"
    assert ckpt["normalization"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert (ckpt["epoch"], ckpt["step"]) == (2, 40)
    assert ckpt["history"] == [
        {"epoch": 1, "loss": 0.5, "auroc": [0.5, 0.75]},
        {"epoch": 2, "loss": 0.25, "auroc": [0.6, 0.8]},
    ]
    assert type(ckpt["history"][0]["loss"]) is float
    assert ckpt["best"] == {"epoch": 2, "auroc": 0.7}
    assert ckpt["config"] == {"lr": 1e-3, "data": str(tmp_path), "seed": 3}
    assert ckpt["chexlib_version"] == "0.1.0" and ckpt["torch_version"] == torch.__version__
    assert_same(expected_model, ckpt["model_state"], "model_state")
    assert_same(expected_optimizer, ckpt["optimizer_state"], "optimizer_state")

    # The states resume: fresh objects loaded from the file match the live ones.
    fresh = DenseNet121()
    fresh.load_state_dict(ckpt["model_state"])
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1.0)
    fresh_opt.load_state_dict(ckpt["optimizer_state"])
    assert_same(expected_optimizer, fresh_opt.state_dict(), "resumed optimizer")
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    fresh_sched.load_state_dict(ckpt["scheduler_state"])
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr() == [1e-3 * 0.25]
    fresh_scaler = torch.amp.GradScaler("cpu")
    fresh_scaler.load_state_dict(ckpt["scaler_state"])
    assert fresh_scaler.get_scale() == scaler.get_scale() != 65536.0


def test_file_loads_with_plain_torch_weights_only(tmp_path, trained):
    model, optimizer, scheduler, scaler = trained
    path = save(tmp_path / "a.ckpt", model, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, rng=capture_rng_state())  # fmt: skip
    raw = torch.load(path, weights_only=True)  # torch itself, not chexlib's reader
    assert raw["format"] == "chexlib-checkpoint"
    assert all(not v.is_cuda for v in raw["model_state"].values())


def test_defaults_record_imagenet_normalization_and_empty_history(tmp_path):
    model = DenseNet121()
    ckpt = load_checkpoint(save(tmp_path / "d.ckpt", model))
    assert ckpt["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert ckpt["history"] == [] and ckpt["config"] == {}
    assert ckpt["best"] is None and ckpt["rng"] is None
    assert ckpt["optimizer_state"] is None and ckpt["scheduler_state"] is None


def test_model_from_checkpoint_gives_same_logits_in_eval_mode(tmp_path, trained):
    model = trained[0]
    path = save(tmp_path / "m.ckpt", model)
    model.eval()
    with torch.no_grad():
        expected = model(images(7))
    model.train()
    before = torch.get_rng_state()
    loaded, ckpt = model_from_checkpoint(path, image_size=IMAGE_SIZE)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random stream is untouched
    assert not loaded.training
    assert loaded.weights_source == f"checkpoint:{path}"
    with torch.no_grad():
        assert torch.allclose(loaded(images(7)), expected, atol=1e-6)
    assert ckpt["classes"] == list(OBSERVATIONS)


# ---------------------------------------------------------------- random generators


def draw() -> tuple:
    return (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.standard_normal(3).tolist() + np.random.randint(0, 10**9, 2).tolist(),
        torch.rand(3).tolist() + torch.randn(2).tolist(),
    )


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached Gaussian in Python's and numpy's generators
    np.random.standard_normal()
    state = capture_rng_state()
    expected = draw()
    draw()  # move every generator on
    path = save(tmp_path / "r.ckpt", DenseNet121(), rng=state)
    assert torch.load(path, weights_only=True)["rng"]["numpy"]["has_gauss"] == 1
    restore_rng_state(load_checkpoint(path)["rng"])
    assert draw() == expected


def test_restore_rng_rejects_incomplete_state():
    with pytest.raises(CheckpointError, match="numpy"):
        restore_rng_state({"python": {}, "torch": torch.get_rng_state()})


# ---------------------------------------------------------------- atomic saves


def test_failed_replace_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    model = DenseNet121()
    save(path, model, epoch=1)
    before = path.read_bytes()
    expected = clone_state(model.state_dict())
    with torch.no_grad():
        model.classifier.bias.add_(1.0)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save(path, model, epoch=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1
    assert_same(expected, ckpt["model_state"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_partial_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    model = DenseNet121()
    save(path, model, epoch=1)
    before = path.read_bytes()
    written = {}

    class HalfWriter(io.FileIO):
        def write(self, data):
            written["bytes"] = super().write(bytes(data)[: len(data) // 2])
            raise OSError("simulated disk full after a partial write")

    # chexlib.files resolves ``open`` through its module globals first.
    monkeypatch.setattr(chexlib.files, "open", lambda p, mode: HalfWriter(p, "xb"), raising=False)
    with pytest.raises(OSError, match="disk full"):
        save(path, model, epoch=2)
    monkeypatch.undo()
    assert written["bytes"] > 1_000_000  # the crash did happen mid-file
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1


# ---------------------------------------------------------------- refusals


def resave(src, dst, **changes):
    """Write a copy of a checkpoint with some fields changed, with plain torch.save."""
    ckpt = torch.load(src, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, dst)
    return dst


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return save(tmp_path_factory.mktemp("good") / "good.ckpt", DenseNet121())


def test_refuses_other_class_list(good):
    other = list(OBSERVATIONS[:-1]) + ["Tuberculosis"]
    with pytest.raises(CheckpointError, match="Tuberculosis") as info:
        load_checkpoint(good, classes=other)
    assert "Support Devices" in str(info.value) and str(good) in str(info.value)
    swapped = list(OBSERVATIONS)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(CheckpointError, match="another order: position 0"):
        load_checkpoint(good, classes=swapped)
    with pytest.raises(CheckpointError, match="expected but not in the file"):
        load_checkpoint(good, classes=OBSERVATIONS[:5])
    assert load_checkpoint(good, classes=None)["classes"] == list(OBSERVATIONS)


def test_refuses_other_arch(good, tmp_path):
    path = resave(good, tmp_path / "r.ckpt", arch="resnet50")
    with pytest.raises(CheckpointError, match="architecture 'resnet50', expected 'densenet121'"):
        load_checkpoint(path)


def test_refuses_other_image_size(good):
    with pytest.raises(CheckpointError, match="trained on 64 px images, expected image_size=224"):
        load_checkpoint(good, image_size=224)
    assert load_checkpoint(good, image_size=64)["image_size"] == 64


@pytest.mark.parametrize(
    ("version", "words"), [(999, "newer"), (0, "older"), ("1", "not an integer")]
)
def test_refuses_other_format_version(good, tmp_path, version, words):
    path = resave(good, tmp_path / "v.ckpt", format_version=version)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)
    assert FORMAT_VERSION == 1


def test_refuses_plain_state_dict_and_other_files(tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save(DenseNet121().state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a chexlib checkpoint.*plain state dict"):
        load_checkpoint(plain)
    other = tmp_path / "other.pth"
    torch.save({"epoch": 3, "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a chexlib checkpoint.*epoch, state_dict"):
        load_checkpoint(other)
    with pytest.raises(MissingFileError, match="missing.ckpt"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_refuses_incomplete_checkpoint(good, tmp_path):
    ckpt = torch.load(good, weights_only=True)
    del ckpt["model_state"]
    torch.save(ckpt, tmp_path / "i.ckpt")
    with pytest.raises(CheckpointError, match="missing model_state"):
        load_checkpoint(tmp_path / "i.ckpt")


@pytest.mark.parametrize("keep", [0, 10, 1000, 0.5, -100, -1])
def test_refuses_truncated_file(good, tmp_path, keep):
    data = good.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path = tmp_path / "cut.ckpt"
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_refuses_malicious_pickle_without_running_it(good, tmp_path, writer):
    marker = tmp_path / "pwned"
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"] = {"note": Payload(marker)}  # otherwise a valid checkpoint
    path = tmp_path / "evil.ckpt"
    if writer == "torch.save":
        torch.save(ckpt, path)
    else:
        path.write_bytes(pickle.dumps(ckpt))
    with pytest.raises(CheckpointError, match="refused: the file contains Python objects") as info:
        load_checkpoint(path)
    assert "could run code" in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()
    # The payload is live: an unsafe load does create the marker.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


# ---------------------------------------------------------------- save-time checks


def test_save_refuses_objects_weights_only_cannot_load(tmp_path):
    path = tmp_path / "x.ckpt"
    with pytest.raises(CheckpointError, match=r"config\['callback'\]: a function"):
        save(path, DenseNet121(), config={"callback": lambda: None})

    class Sneaky:
        def state_dict(self):
            return {"thing": Payload(tmp_path / "never")}

    with pytest.raises(CheckpointError, match="scheduler_state would not load"):
        save(path, DenseNet121(), scheduler=Sneaky())
    assert not path.exists()
    assert not (tmp_path / "never").exists()


def test_save_checks_its_arguments(tmp_path):
    model = DenseNet121()
    with pytest.raises(ParameterError, match="13 names for a model with 14 outputs"):
        save(tmp_path / "a", model, classes=OBSERVATIONS[:13])
    with pytest.raises(ParameterError, match="uncertainty_policy='maybe'"):
        save(tmp_path / "a", model, uncertainty_policy="maybe")
    with pytest.raises(ParameterError, match="image_size=0"):
        save(tmp_path / "a", model, image_size=0)
    with pytest.raises(ParameterError, match="without an 'arch'"):
        save(tmp_path / "a", nn.Linear(2, 2))
    assert not (tmp_path / "a").exists()


def test_weights_fingerprint_follows_the_weights_not_the_object():
    from chexlib.checkpoint import weights_fingerprint
    from chexlib.model import densenet121

    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none")
    first = weights_fingerprint(model)
    assert first == weights_fingerprint(copy.deepcopy(model))
    assert len(first) == 16
    with torch.no_grad():
        model.features.norm5.running_var[3] += 1e-3  # a buffer counts too
    assert weights_fingerprint(model) != first


def test_data_fingerprint_tells_training_rows_apart():
    from types import SimpleNamespace

    import pandas as pd

    from chexlib.fingerprint import data_fingerprint

    frame = pd.DataFrame({"Path": ["a.jpg", "b.jpg", "c.jpg"], "Edema": [1.0, 0.0, -1.0]})
    ds = SimpleNamespace(labels=frame, indices=[0, 2], policy="zeros")
    same = SimpleNamespace(labels=frame.copy(), indices=[0, 2], policy="zeros")
    assert data_fingerprint(ds) == data_fingerprint(same)
    relabelled = frame.assign(Edema=[1.0, 0.0, 1.0])
    assert data_fingerprint(ds) != data_fingerprint(SimpleNamespace(labels=relabelled,
                                                                    indices=[0, 2], policy="zeros"))
    assert data_fingerprint(ds) != data_fingerprint(SimpleNamespace(labels=frame, indices=[0, 1],
                                                                    policy="zeros"))
    assert data_fingerprint(ds) != data_fingerprint(SimpleNamespace(labels=frame, indices=[0, 2],
                                                                    policy="ones"))
