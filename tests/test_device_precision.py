"""``precision: auto`` on the CPU: bf16 autocast + channels-last only where the CPU has native bf16.

The detection is tested on ``/proc/cpuinfo`` texts of real CPUs (x86 with and without
``avx512_bf16`` / ``amx_bf16``, Arm with ``bf16``), the choice with the detection patched both
ways (so the test does not depend on this machine's CPU), and training and prediction in bf16
against float32 on the same tiny problem: the recorded configuration, the memory format handed
back, and the probabilities within bf16's rounding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from support import TensorDataset, train_config

from chexlib import device as D
from chexlib import params as P
from chexlib.checkpoint import load_checkpoint
from chexlib.errors import ParameterError
from chexlib.model import densenet121
from chexlib.run import RunFolder
from chexlib.train import fit
from chexlib.train.prediction import predict

CPU = torch.device("cpu")

SAPPHIRE_RAPIDS = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse sse2 avx2 "
                   "avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n")
SKYLAKE = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse sse2 avx2 avx512f "
           "avx512bw\n")
NEOVERSE_V1 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd aes sha2 bf16 i8mm sve\n"
NEOVERSE_N1 = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics\n"


@pytest.mark.parametrize("text, native", [(SAPPHIRE_RAPIDS, True), (SKYLAKE, False),
                                          (NEOVERSE_V1, True), (NEOVERSE_N1, False), ("", False)])
def test_native_bf16_is_read_from_the_cpu_flags(text, native):
    assert D.cpuinfo_has_bf16(text) is native


def test_a_flag_name_inside_another_word_is_not_bf16():
    assert not D.cpuinfo_has_bf16("flags\t: avx512_bf16x notbf16\nmodel name\t: bf16 cpu\n")


@pytest.mark.parametrize("native, auto", [(True, torch.bfloat16), (False, None)])
def test_auto_follows_the_detection_and_forced_choices_do_not(monkeypatch, native, auto):
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: native)
    assert D.amp_dtype(CPU, "auto") is auto
    assert D.amp_dtype(CPU, "fp32") is None
    if native:
        assert D.amp_dtype(CPU, "bf16") is torch.bfloat16
    else:  # forced, even where it is slow, with a warning that says so
        with pytest.warns(RuntimeWarning, match="without native bf16 is emulated and slow"):
            assert D.amp_dtype(CPU, "bf16") is torch.bfloat16
    assert D.channels_last(CPU, D.amp_dtype(CPU, "auto")) is native
    assert not D.channels_last(CPU, None)


def test_invalid_precisions_say_what_is_expected():
    with pytest.raises(ParameterError, match="precision 'fp16' needs a CUDA device; this run uses "
                                             "the CPU"):
        D.amp_dtype(CPU, "fp16")
    with pytest.raises(ParameterError, match="precision 'half' is unknown"):
        D.amp_dtype(CPU, "half")
    with pytest.raises(ParameterError, match="precision"):
        P.validate({"precision": "fp8"})


def test_to_device_keeps_values_and_sets_the_format():
    images = torch.randn(2, 3, 8, 8)
    moved = D.to_device(images, CPU, torch.channels_last)
    assert moved.is_contiguous(memory_format=torch.channels_last) and not moved.is_contiguous()
    assert torch.equal(moved, images)
    assert D.to_device(images, CPU).is_contiguous()


def _trained(tmp_path, name, precision, monkeypatch, native=True):
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: native)
    data = TensorDataset(n=12, size=32, seed=3)
    torch.manual_seed(0)
    model = densenet121(num_classes=14, weights="none")
    result = fit(model, data, data, train_config(epochs=1), tmp_path / name, device="cpu",
                 precision=precision, progress=False, log=lambda *a: None)
    return model, data, result


def test_bf16_training_records_its_dtype_and_hands_back_nchw(tmp_path, monkeypatch):
    model, data, result = _trained(tmp_path, "bf16", "auto", monkeypatch)
    assert result.status == "trained"
    assert not D.is_channels_last(model)
    assert all(p.is_contiguous() for p in model.parameters())
    ckpt = load_checkpoint(RunFolder(tmp_path / "bf16").checkpoint, classes=None, image_size=None)
    assert ckpt["config"]["autocast"] == "bfloat16"
    # The same folder in float32 is another configuration: trained afresh, not reused.
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: False)
    again = fit(densenet121(num_classes=14, weights="none"), data, data, train_config(epochs=1),
                tmp_path / "bf16", device="cpu", precision="auto", progress=False,
                log=lambda *a: None)
    assert again.status == "trained"
    assert any("another configuration" in note for note in again.notes)
    ckpt = load_checkpoint(RunFolder(tmp_path / "bf16").checkpoint, classes=None, image_size=None)
    assert ckpt["config"]["autocast"] == "float32"


def test_bf16_prediction_is_float32_prediction_within_bf16_rounding(tmp_path, monkeypatch):
    model, data, _ = _trained(tmp_path, "fp32", "fp32", monkeypatch)
    _, fp32 = predict(model, data, batch_size=4, precision="fp32")
    _, bf16 = predict(model, data, batch_size=4, precision="bf16")
    assert not D.is_channels_last(model)  # converted for the run, restored after it
    assert not np.array_equal(fp32, bf16)  # it did run in bf16
    # bf16 keeps 8 significant bits: logits of DenseNet's 1024 features differ by a few 1e-2.
    np.testing.assert_allclose(bf16, fp32, atol=0.03)
    # A model the caller keeps channels-last stays so.
    model.to(memory_format=torch.channels_last)
    _, again = predict(model, data, batch_size=4, precision="bf16")
    assert D.is_channels_last(model)
    np.testing.assert_allclose(again, bf16, atol=1e-6)


def test_the_resolved_autocast_is_not_a_parameter():
    config = train_config()
    assert replace(config, autocast="bfloat16").to_dict()["autocast"] == "bfloat16"
    params = P.resolve("smoke")
    assert "autocast" not in params
    assert type(config).from_params({**params, "epochs": 2}).autocast == ""


def test_bf16_training_is_deterministic_for_a_seed(tmp_path, monkeypatch):
    one, _, first = _trained(tmp_path, "one", "auto", monkeypatch)
    two, _, second = _trained(tmp_path, "two", "auto", monkeypatch)
    a, b = one.state_dict(), two.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(first.history.to_numpy(), second.history.to_numpy())
