"""Fault matrix: checkpoints, parameters and GPU out-of-memory ("what happens when ...").

One test (or one parametrized test) per row of the README table. Each checks the exception
class, that the message names the file or parameter, what it found and what was expected, and
that nothing on disk was changed or lost.

Checkpoint faults are checked where users meet them: :func:`load_checkpoint` (and
:func:`model_from_checkpoint`, which notebooks 03-06 call), ``densenet121(weights=path)``
(the ``weights`` parameter) and the resume point of :func:`fit` (``checkpoint_last.pt``).
Parameter faults go through the real command lines as subprocesses, which must exit with
status 2 before creating the run or data folder. Out-of-memory errors are simulated on the CPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import chexlib.train.loop as T
from chexlib import errors
from chexlib.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from chexlib.errors import CheckpointError
from chexlib.model import DenseNet121, densenet121
from chexlib.observations import OBSERVATIONS
from chexlib.run import RunFolder
from chexlib.train import TrainConfig, fit, predict

SIZE = 32
# The configuration fit records when it trains in float32 (precision fp32).
CONFIG = TrainConfig(epochs=1, batch_size=4, lr=1e-3, seed=0, image_size=SIZE, weights="none",
                     autocast="float32")
DROP = object()  # _resave: remove the field


class Tiny(torch.utils.data.Dataset):
    """A few random images with fixed labels, every class both positive and negative."""

    def __init__(self, n=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.targets = np.zeros((n, len(OBSERVATIONS)), np.float32)
        self.targets[::2] = 1.0
        self.masks = np.ones_like(self.targets)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], torch.as_tensor(self.targets[i]), torch.as_tensor(self.masks[i]), i


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid resume point for CONFIG (epoch 0, step 0, not finished)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("good") / "good.pt"
    model = DenseNet121()
    return save_checkpoint(
        path, model, classes=OBSERVATIONS, image_size=SIZE, uncertainty_policy="zeros",
        optimizer=torch.optim.Adam(model.parameters(), lr=CONFIG.lr), epoch=0, step=0, history=[],
        best={"val_auroc": -1.0, "epoch": -1, "finished": False}, config=CONFIG.to_dict(), rng=capture_rng_state(),
    )


def _resave(good: Path, path: Path, **changes) -> Path:
    """A copy of ``good`` with fields changed (or dropped), written with plain torch.save."""
    ckpt = torch.load(good, weights_only=True)
    for key, value in changes.items():
        if value is DROP:
            del ckpt[key]
        else:
            ckpt[key] = value
    torch.save(ckpt, path)
    return path


def _resume(tmp_path: Path, bad: Path):
    """Put ``bad`` where fit looks for its resume point; run one step; return (result, log)."""
    out = tmp_path / "run"
    out.mkdir()
    RunFolder(out).last_checkpoint.write_bytes(bad.read_bytes())
    lines: list[str] = []
    torch.manual_seed(0)
    result = fit(DenseNet121(), Tiny(), Tiny(seed=1), CONFIG, out, device="cpu", progress=False,
                 max_steps=1, log=lines.append, precision="fp32")
    return result, "\n".join(lines)


def _check_refused_everywhere(tmp_path, bad: Path, expected: str, weights_expected: str | None):
    """load_checkpoint, densenet121(weights=path) and fit's resume all refuse ``bad``.

    ``expected``: regex of load_checkpoint's and fit's message; ``weights_expected``: regex of
    densenet121's, or None when densenet121 is meant to accept the file.
    """
    before = bad.read_bytes()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad, classes=OBSERVATIONS, image_size=SIZE)
    message = str(info.value)
    assert str(bad) in message and re.search(expected, message), message

    if weights_expected is not None:
        with pytest.raises(CheckpointError) as info:
            densenet121(num_classes=len(OBSERVATIONS), weights=bad)
        assert str(bad) in str(info.value) and re.search(weights_expected, str(info.value)), (
            str(info.value))
    assert bad.read_bytes() == before  # reading never changes the file

    result, log = _resume(tmp_path, bad)
    out = tmp_path / "run"
    last = RunFolder(out).last_checkpoint
    assert result.status == "interrupted"  # trained afresh for one step, not "resumed"
    assert "resuming from" not in log
    assert re.search(r"not resuming: " + re.escape(str(last)) + ": .*" + expected, log), log
    assert f"previous checkpoints kept as *.previous in {out}" in log
    # The refused file is kept.
    assert last.with_name(f"{last.name}.previous").read_bytes() == before
    assert load_checkpoint(last, image_size=SIZE)["step"] == 1  # a fresh resume point


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_control_a_good_resume_point_resumes(tmp_path, good):
    """The variants below differ from this file by their fault only."""
    assert load_checkpoint(good, image_size=SIZE)["arch"] == "densenet121"
    assert densenet121(weights=good).weights_source == f"checkpoint:{good}"
    result, log = _resume(tmp_path, good)
    assert "resuming from" in log and "not resuming" not in log
    assert result.status == "interrupted"


def _resnet_state():
    return torchvision.models.resnet18(num_classes=len(OBSERVATIONS)).state_dict()


@pytest.mark.parametrize("variant", ["arch_field", "resnet_state_dict", "resnet_weights_inside"])
def test_checkpoint_from_another_architecture_is_refused(tmp_path, good, variant):
    if variant == "arch_field":
        bad = _resave(good, tmp_path / "arch.pt", arch="resnet50")
        expected = "architecture 'resnet50', expected 'densenet121'"
        weights_expected = expected
    elif variant == "resnet_state_dict":
        bad = tmp_path / "resnet18.pth"
        torch.save(_resnet_state(), bad)
        # Says what the file holds (not DenseNet-121 weights: no densenet121(weights=...) hint)
        # and what was expected.
        expected = (r"not a chexlib checkpoint \(a plain state dict of another network than "
                    r"DenseNet-121; its keys: conv1\.weight.*\); expected a chexlib checkpoint")
        weights_expected = r"not a DenseNet-121 state dict: .*unexpected keys \(.*conv1\.weight"
    else:  # a chexlib-format file whose arch field says densenet121, holding a ResNet's weights
        bad = _resave(good, tmp_path / "inside.pt", model_state=_resnet_state())
        expected = (r"model_state does not fit a DenseNet-121 with 14 outputs: \d+ unexpected keys"
                    r" \(bn1\..*\d+ missing keys \(classifier\.bias, classifier\.weight, "
                    r"features\.conv0\.weight")
        weights_expected = r"(do|does) not fit a DenseNet-121"
    _check_refused_everywhere(tmp_path, bad, expected, weights_expected)


@pytest.mark.parametrize("variant", ["renamed_class", "reordered", "thirteen_outputs"])
def test_checkpoint_with_another_class_list_is_refused(tmp_path, good, variant):
    if variant == "renamed_class":
        classes = list(OBSERVATIONS[:-1]) + ["Tuberculosis"]
        bad = _resave(good, tmp_path / "c.pt", classes=classes)
        expected = (r"other classes than expected: in the file but not expected: "
                    r"\['Tuberculosis'\]; expected but not in the file: \['Support Devices'\]")
    elif variant == "reordered":
        classes = list(OBSERVATIONS)
        classes[0], classes[1] = classes[1], classes[0]
        bad = _resave(good, tmp_path / "o.pt", classes=classes)
        expected = (r"same classes in another order: position 0 is 'Enlarged Cardiomediastinum' "
                    r"in the file, 'No Finding' expected")
    else:
        torch.manual_seed(0)
        bad = save_checkpoint(tmp_path / "13.pt", DenseNet121(num_classes=13),
                              classes=OBSERVATIONS[:13], image_size=SIZE,
                              uncertainty_policy="zeros", config=CONFIG.to_dict())
        expected = r"expected but not in the file: \['Support Devices'\]"
    _check_refused_everywhere(tmp_path, bad, expected, expected)


def test_checkpoint_with_another_image_size_is_refused(tmp_path, good):
    bad = _resave(good, tmp_path / "s.pt", image_size=224)
    expected = "trained on 224 px images, expected image_size=32"
    with pytest.raises(CheckpointError, match=expected):
        model_from_checkpoint(bad, image_size=SIZE)  # how notebooks 03-06 open a run's model
    # By design densenet121(weights=path) takes the weights as a starting point at any image
    # size (DenseNet-121 is size-agnostic): fine-tuning at another resolution is allowed.
    assert densenet121(weights=bad).weights_source == f"checkpoint:{bad}"
    _check_refused_everywhere(tmp_path, bad, expected, None)


@pytest.mark.parametrize("variant", ["torchvision_state_dict", "format_version_0",
                                     "format_version_unknown", "missing_fields", "foreign_dict"])
def test_checkpoint_in_an_older_or_unknown_format_is_refused(tmp_path, good, variant):
    weights_expected = None  # densenet121 accepts a DenseNet-121 state dict by design
    if variant == "torchvision_state_dict":
        bad = tmp_path / "tv.pth"
        torch.save(torchvision.models.densenet121(num_classes=14).state_dict(), bad)
        expected = (r"not a chexlib checkpoint \(a plain state dict of DenseNet-121 weights; "
                    r"pass it to densenet121\(weights=path\)\); expected a chexlib checkpoint "
                    r"\(a dict with format='chexlib-checkpoint'")
    elif variant == "format_version_0":
        bad = _resave(good, tmp_path / "v0.pt", format_version=0)
        expected = r"format_version 0 is older than this chexlib supports \(1\)"
        weights_expected = expected
    elif variant == "format_version_unknown":
        bad = _resave(good, tmp_path / "v9.pt", format_version=999)
        expected = r"format_version 999 is newer than this chexlib supports \(1\)"
        weights_expected = expected
    elif variant == "missing_fields":
        bad = _resave(good, tmp_path / "m.pt", model_state=DROP, optimizer_state=DROP)
        expected = "incomplete checkpoint, missing model_state, optimizer_state"
        weights_expected = expected
    else:  # another tool's checkpoint: a dict with its own fields
        bad = tmp_path / "lightning.ckpt"
        torch.save({"epoch": 3, "state_dict": DenseNet121().state_dict()}, bad)
        expected = (r"not a chexlib checkpoint \(a dict without format='chexlib-checkpoint'; its "
                    r"keys: epoch, state_dict\); expected a chexlib checkpoint")
        weights_expected = r"not a chexlib checkpoint nor a state dict"
    _check_refused_everywhere(tmp_path, bad, expected, weights_expected)
    if weights_expected is None:
        assert densenet121(weights=bad).weights_source == f"state_dict:{bad}"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_a_code_running_pickle_is_refused_without_running_it(tmp_path, good):
    marker = tmp_path / "marker"
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"] = {"note": Payload(marker)}  # otherwise the valid resume point
    bad = tmp_path / "evil.pt"
    torch.save(ckpt, bad)  # plain pickling, no weights_only restriction when writing
    expected = (r"refused: the file contains Python objects other than tensors; loading it "
                r"could run code \(Unsupported global: GLOBAL (builtins|io)\.open\)")
    _check_refused_everywhere(tmp_path, bad, expected, expected)
    assert not marker.exists()
    torch.load(bad, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()


def test_checkpoint_torn_or_truncated_is_refused(tmp_path, good):
    data = good.read_bytes()
    bad = tmp_path / "torn.pt"
    bad.write_bytes(data[: len(data) // 2])  # a copy or save cut off halfway
    expected = r"truncated or corrupt file \(RuntimeError: PytorchStreamReader failed"
    _check_refused_everywhere(tmp_path, bad, expected, expected)


# ------------------------------------------------------------------------------ parameters


def _cli(tmp_path: Path, module: str, *args: str) -> tuple[str, set[str]]:
    """Run a command line that must refuse its parameters; return (message, modules imported).

    It must exit with status 2, create neither the run folder nor the data folder, and write
    nothing into its working folder.
    """
    run, data, cwd = tmp_path / "run", tmp_path / "data", tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    cmd = [sys.executable, "-X", "importtime", "-m", module, *args,
           "-p", "run_dir", str(run), "-p", "data_root", str(data)]
    # Outside the repository, so that a run the checks failed to stop cannot find the notebooks.
    env = {k: v for k, v in os.environ.items() if k != "CHEXLIB_ROOT"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)
    lines = proc.stderr.splitlines()
    imported = {ln.rsplit("|", 1)[1].strip() for ln in lines if ln.startswith("import time:")}
    message = "\n".join(ln for ln in lines if not ln.startswith("import time:"))
    assert proc.returncode == 2, (proc.returncode, message)
    assert message.startswith("error: "), message
    assert not run.exists() and not data.exists()
    assert list(cwd.iterdir()) == []
    return message, imported


def _run_cli(tmp_path, *args):
    """``python -m chexlib run --preset smoke ...``: refused before any notebook, without torch."""
    message, imported = _cli(tmp_path, "chexlib", "run", "--preset", "smoke", *args)
    assert "torch" not in imported and "papermill" not in imported, "heavy imports before checks"
    return message


def _yaml(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("where", ["-p", "--params"])
def test_params_unknown_name_is_rejected_before_any_notebook(tmp_path, where):
    if where == "-p":
        message = _run_cli(tmp_path, "-p", "epoch", "3")
        source = "-p"
    else:
        path = _yaml(tmp_path, "epochs: 2\nepoch: 3\n")
        message = _run_cli(tmp_path, "--params", str(path))
        source = str(path)
    assert f"{source}: unknown parameter 'epoch' (did you mean 'epochs'?); valid parameters: " \
           "dataset, data_root" in message
    assert "n_explain" in message  # the whole list


def test_params_wrong_type_is_rejected_before_any_notebook(tmp_path):
    message = _run_cli(tmp_path, "-p", "epochs", "ten")
    assert "-p: parameter 'epochs' = 'ten' is not a whole number; expected an integer in " \
           "1 .. 1000" in message


@pytest.mark.parametrize("case", ["negative_lr_train_cli", "image_size_0"])
def test_params_out_of_range_is_rejected_before_any_notebook(tmp_path, case):
    if case == "negative_lr_train_cli":
        # chexlib.train's package imports its torch modules lazily: the check comes first.
        message, imported = _cli(tmp_path, "chexlib.train", "--preset", "smoke", "-p", "lr",
                                 "-0.1")
        assert "-p: parameter 'lr' = -0.1 is out of range; expected 1e-08 .. 1" in message
        assert "torch" not in imported, "torch imported before the parameters were checked"
    else:
        message = _run_cli(tmp_path, "-p", "image_size", "0")
        assert "-p: parameter 'image_size' = 0 is out of range; expected 32 .. 1024" in message


def test_params_batch_size_too_small_to_train_is_rejected_before_any_notebook(tmp_path):
    # BatchNorm needs two images per process and step: fit refuses batch_size 1 in notebook 02,
    # after notebook 01 has generated the data and written its outputs.
    message = _run_cli(tmp_path, "-p", "batch_size", "1")
    assert "-p: parameter 'batch_size' = 1 is out of range; expected 2 .. 4096" in message
    message = _run_cli(tmp_path, "-p", "train_launcher", "torchrun", "-p", "train_processes", "4",
                       "-p", "batch_size", "6")
    assert ("-p: parameter 'batch_size' = 6 is too small for train_processes=4:"
            " each process needs at least 2 images per step (BatchNorm); expected batch_size >= 8"
            in message)


def test_params_unknown_class_name_is_rejected_before_any_notebook(tmp_path):
    message = _run_cli(tmp_path, "-p", "classes_to_show", "[Cardiomegaly, Cardiomegally]")
    assert ("-p: parameter 'classes_to_show': 'Cardiomegally' is not allowed (did you mean "
            "'Cardiomegaly'?); expected items from " + ", ".join(OBSERVATIONS)) in message


@pytest.mark.parametrize("name, value, bad", [("lrp_composite", "epsilon_plus_flatt", None),
                                              ("composites", "[epsilon, lrp_magic]", "lrp_magic")])
def test_params_unknown_composite_is_rejected_before_any_notebook(tmp_path, name, value, bad):
    from chexlib.methods import LRP_COMPOSITES

    message = _run_cli(tmp_path, "-p", name, value)
    valid = ", ".join(LRP_COMPOSITES)
    if bad is None:
        assert (f"-p: parameter 'lrp_composite' = '{value}' is not allowed (did you mean "
                f"'epsilon_plus_flat'?); expected one of {valid}") in message
    else:
        assert f"-p: parameter 'composites': '{bad}' is not allowed; expected items from " \
               f"{valid}" in message


@pytest.mark.parametrize("content", ["list", "scalar", "invalid"])
def test_params_file_not_a_yaml_mapping_is_rejected_before_any_notebook(tmp_path, content):
    text = {"list": "- epochs\n- 3\n", "scalar": "epochs=3\n", "invalid": "epochs: [1\n"}[content]
    path = _yaml(tmp_path, text)
    message = _run_cli(tmp_path, "--params", str(path))
    if content == "invalid":
        assert f"{path}: not valid YAML (" in message and "line 2" in message
        assert "expected a mapping of parameter names to values" in message
    else:
        got = {"list": "a list", "scalar": "a str ('epochs=3')"}[content]
        assert f"{path}: expected a mapping of parameter names to values (name: value " \
               f"lines); got {got}" in message


# ------------------------------------------------------------------------------ out of memory

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB"


def test_out_of_memory_in_a_training_step_stops_with_advice_and_keeps_the_resume_point(
        tmp_path, monkeypatch):
    out = tmp_path / "run"
    last = RunFolder(out).last_checkpoint
    torch.manual_seed(0)
    # Both fits in float32: precision auto is bf16 on a CPU with native bf16, and a bf16
    # checkpoint is (rightly) not resumed by a float32 run.
    first = fit(DenseNet121(), Tiny(), Tiny(seed=1), CONFIG, out, device="cpu", progress=False,
                max_steps=1, precision="fp32", log=lambda s: None)
    assert first.status == "interrupted"
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(files) == {last.name}

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(OOM)

    monkeypatch.setattr(T, "train_step", no_memory)
    lines: list[str] = []
    with pytest.raises(errors.OutOfMemoryError) as info:
        fit(DenseNet121(), Tiny(), Tiny(seed=1), CONFIG, out, device="cpu", progress=False,
            precision="fp32", log=lines.append)
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert "training: a batch of 4 images (batch_size=4) did not fit in GPU memory " \
           f"({OOM})" in message
    assert "use a smaller batch_size, e.g. -p batch_size 2" in message
    assert "and precision auto (mixed precision on CUDA; this run uses fp32)" in message
    assert f"the resume point {last} is intact (epoch 1, step 1)" in message
    assert "resuming from" in "\n".join(lines)
    # Nothing was written or half-written: same files, same bytes, and the resume point loads.
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    assert load_checkpoint(last, image_size=SIZE)["step"] == 1


def test_out_of_memory_in_predict_stops_with_advice(monkeypatch):
    model = DenseNet121()

    def no_memory(images):
        raise torch.cuda.OutOfMemoryError(OOM)

    monkeypatch.setattr(model, "forward", no_memory)
    with pytest.raises(errors.OutOfMemoryError) as info:
        predict(model, Tiny(), batch_size=8, device="cpu")
    message = str(info.value)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert f"prediction: a batch of 8 images (batch_size=8) did not fit in GPU memory ({OOM})" \
           in message
    assert "use a smaller batch_size, e.g. batch_size=4" in message
    assert "precision auto (mixed precision on CUDA; it is already auto)" in message
