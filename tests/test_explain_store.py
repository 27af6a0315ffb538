"""chexlib.explain.store: float16 round trip, atomic writes, torn files, validation, caching."""

from __future__ import annotations

import io
import json
import os
import signal

import numpy as np
import pytest
import torch

import chexlib.files
from chexlib.explain.store import (
    CorruptMapError,
    MapNotFoundError,
    MapStore,
    MapStoreError,
)
from chexlib.observations import OBSERVATIONS
from chexlib.run import RunFolder

IMAGE = "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
IMAGE_ID = "patient64541_study1_view1_frontal"
OTHER = "train/patient00002/study2/view2_lateral.jpg"


def random_maps(seed: int = 0, classes: int = 14, size: int = 24) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Relevance spans orders of magnitude: include large, typical and tiny (subnormal) values.
    scale = 10.0 ** rng.uniform(-7, 3, size=(classes, size, size))
    return rng.normal(size=(classes, size, size)) * scale


def test_float16_round_trip_within_float16_precision(tmp_path):
    store = MapStore(tmp_path)
    maps = random_maps()
    store.save("EpsilonPlusFlat", IMAGE, maps)
    loaded = store.load("EpsilonPlusFlat", IMAGE)
    assert loaded.dtype == np.float32 and loaded.shape == maps.shape
    # float16: relative half-ulp 2**-11 for normal numbers, absolute 2**-25 for subnormals.
    bound = 2.0**-11 * np.abs(maps) + 2.0**-25
    assert (np.abs(loaded - maps) <= bound).all()
    # The file is a plain float16 .npy named by the CheXlocalize image id.
    on_disk = np.load(RunFolder(tmp_path).maps("EpsilonPlusFlat") / f"{IMAGE_ID}.npy")
    assert on_disk.dtype == np.float16 and on_disk.shape == (14, 24, 24)
    index = json.loads((RunFolder(tmp_path).maps("EpsilonPlusFlat") / "index.json").read_text())
    assert index["classes"] == list(OBSERVATIONS) and index["height"] == index["width"] == 24


def test_tensor_input_subset_classes_and_listing(tmp_path):
    store = MapStore(tmp_path)
    subset = ["Cardiomegaly", "Edema"]
    maps = torch.randn(2, 8, 8, dtype=torch.float64)
    store.save("gradcam", IMAGE, maps, classes=subset)
    store.save("gradcam", OTHER, maps, classes=subset)
    assert store.classes("gradcam") == tuple(subset)
    np.testing.assert_allclose(store.load("gradcam", IMAGE), maps.numpy(), rtol=2**-11)
    assert store.load("gradcam", IMAGE_ID).shape == (2, 8, 8)  # an image id works too
    assert store.methods() == ["gradcam"]
    assert store.images("gradcam") == ["patient00002_study2_view2_lateral", IMAGE_ID]
    assert store.images("unknown") == []
    with pytest.raises(MapStoreError, match="stores classes"):
        store.save("gradcam", IMAGE, np.zeros((14, 8, 8)))  # the method's classes are fixed
    with pytest.raises(MapStoreError, match="8x8"):
        store.save("gradcam", IMAGE, np.zeros((2, 9, 8)), classes=subset)


def test_class_lists_are_validated(tmp_path):
    store = MapStore(tmp_path)
    with pytest.raises(MapStoreError, match="CheXpert column order"):
        store.save("m", IMAGE, np.zeros((2, 4, 4)), classes=["Edema", "Cardiomegaly"])
    with pytest.raises(MapStoreError, match="Pleural_Effusion"):
        store.save("m", IMAGE, np.zeros((1, 4, 4)), classes=["Pleural_Effusion"])


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "with space", "x" * 65,
                                  "semi;colon", None])
def test_bad_method_names_refused(tmp_path, name):
    with pytest.raises(MapStoreError, match="method name"):
        MapStore(tmp_path).save(name, IMAGE, np.zeros((14, 4, 4)))
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "gradcam-relu", "lrp_eps0.25", "A+B"])
def test_good_method_names_accepted(tmp_path, name):
    store = MapStore(tmp_path)
    store.save(name, IMAGE, np.ones((14, 4, 4)))
    assert store.has(name, IMAGE)


@pytest.mark.parametrize("maps, match", [
    (np.zeros((4, 4)), r"shape \[C=14, H, W\]"),
    (np.zeros((13, 4, 4)), r"shape \[C=14, H, W\]"),
    (np.zeros((14, 0, 4)), r"shape"),
    (np.full((14, 4, 4), np.nan), "NaN"),
    (np.full((14, 4, 4), -np.inf), "NaN or infinite"),
    (np.full((14, 4, 4), 7e4), "float16's range"),
])
def test_bad_maps_refused_and_nothing_written(tmp_path, maps, match):
    store = MapStore(tmp_path)
    with pytest.raises(MapStoreError, match=match) as err:
        store.save("lrp", IMAGE, maps)
    assert "'lrp'" in str(err.value) or "lrp" in str(err.value)
    assert not store.has("lrp", IMAGE)
    assert not list(tmp_path.rglob("*.npy"))


def test_missing_map_is_a_key_error_naming_method_and_image(tmp_path):
    store = MapStore(tmp_path)
    with pytest.raises(KeyError) as err:
        store.load("lrp", IMAGE)
    assert isinstance(err.value, MapNotFoundError)
    assert "'lrp'" in str(err.value) and IMAGE_ID in str(err.value)
    store.save("lrp", OTHER, np.ones((14, 4, 4)))
    with pytest.raises(MapNotFoundError, match=IMAGE_ID):
        store.load("lrp", IMAGE)


def test_crash_before_replace_keeps_old_map(tmp_path, monkeypatch):
    store = MapStore(tmp_path)
    old = np.ones((14, 4, 4))
    store.save("lrp", IMAGE, old)

    def crash(src, dst):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(chexlib.files.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.save("lrp", IMAGE, -old)
    with pytest.raises(OSError, match="simulated"):
        store.save("lrp", OTHER, -old)
    monkeypatch.undo()
    np.testing.assert_array_equal(store.load("lrp", IMAGE), old)  # the old map, not a mix
    assert not store.has("lrp", OTHER)
    assert [p.name for p in RunFolder(tmp_path).maps("lrp").iterdir()
            if p.name.endswith(".tmp")] == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_writer_leaves_no_valid_map(tmp_path):
    # A real crash: a forked writer is killed (SIGKILL, no cleanup) after writing, before the
    # rename.
    store = MapStore(tmp_path)
    store.save("lrp", IMAGE, np.ones((14, 4, 4)))
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            chexlib.files.os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
            store.save("lrp", OTHER, np.ones((14, 4, 4)))
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    folder = RunFolder(tmp_path).maps("lrp")
    assert any(p.name.endswith(".tmp") for p in folder.iterdir()), "the crash left no temp file"
    assert store.images("lrp") == [IMAGE_ID]
    assert not store.has("lrp", OTHER)
    store.save("lrp", OTHER, np.zeros((14, 4, 4)))
    assert store.has("lrp", OTHER)


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.99])
def test_truncated_file_detected_and_recomputed(tmp_path, keep):
    store = MapStore(tmp_path)
    path = store.save("lrp", IMAGE, random_maps(size=16))
    data = path.read_bytes()
    path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep])
    assert not store.has("lrp", IMAGE)
    with pytest.raises(CorruptMapError, match="unreadable|expected|checksum does not match"):
        store.load("lrp", IMAGE)
    calls = []
    fresh = store.get_or_compute("lrp", IMAGE, lambda: calls.append(1) or np.ones((14, 16, 16)))
    assert calls == [1]
    np.testing.assert_array_equal(fresh, np.ones((14, 16, 16)))


def _write_with_checksum(path, array):
    """A map file with a valid checksum trailer around any array (to reach the later checks)."""
    from chexlib.explain.store import _trailer

    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(buffer.getvalue() + _trailer(buffer.getvalue()))


def test_file_disagreeing_with_index_detected(tmp_path):
    store = MapStore(tmp_path)
    path = store.save("lrp", IMAGE, np.ones((14, 8, 8)))
    np.save(path, np.ones((14, 8, 8), dtype=np.float16))  # a plain .npy: no checksum
    with pytest.raises(CorruptMapError, match="checksum does not match"):
        store.load("lrp", IMAGE)
    _write_with_checksum(path, np.ones((14, 8, 7), dtype=np.float16))  # another shape
    with pytest.raises(CorruptMapError, match=r"\[14, 8, 8\]"):
        store.load("lrp", IMAGE)
    _write_with_checksum(path, np.ones((14, 8, 8), dtype=np.float32))  # not float16
    assert not store.has("lrp", IMAGE)
    _write_with_checksum(path, np.full((14, 8, 8), np.nan, dtype=np.float16))
    with pytest.raises(CorruptMapError, match="NaN"):
        store.load("lrp", IMAGE)


def test_get_or_compute_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return random_maps(seed=len(calls))

    first = MapStore(tmp_path).get_or_compute("lrp", IMAGE, compute)
    second = MapStore(tmp_path).get_or_compute("lrp", IMAGE, compute)  # a new session hits too
    assert calls == [1]
    np.testing.assert_array_equal(first, second)  # a miss returns the stored (float16) values
    assert first.dtype == np.float32
    np.testing.assert_allclose(first, random_maps(seed=1), rtol=2**-11, atol=2**-25)


def test_non_durable_store_writes_the_same(tmp_path, monkeypatch):
    fsyncs = []
    monkeypatch.setattr(chexlib.files.os, "fsync", lambda fd: fsyncs.append(fd))
    MapStore(tmp_path / "a", durable=False).save("lrp", IMAGE, np.ones((14, 4, 4)))
    index_fsyncs = len(fsyncs)  # the index is always written durably
    MapStore(tmp_path / "b").save("lrp", IMAGE, np.ones((14, 4, 4)))
    assert len(fsyncs) == 2 * index_fsyncs + 1
    assert os.path.getsize(RunFolder(tmp_path / "a").maps("lrp") / f"{IMAGE_ID}.npy") == \
        os.path.getsize(RunFolder(tmp_path / "b").maps("lrp") / f"{IMAGE_ID}.npy")


# ------------------------------------------------------------------ model binding, fill


def test_maps_of_another_model_are_stale_and_removed_on_the_next_save(tmp_path):
    old = MapStore(tmp_path, model="aaaa")
    old.save("z", IMAGE_ID, np.ones((14, 4, 4)))
    assert old.has("z", IMAGE_ID)
    new = MapStore(tmp_path, model="bbbb")
    assert not new.has("z", IMAGE_ID)  # the run was retrained: never shown as this model's map
    with pytest.raises(MapNotFoundError, match="retrained"):
        new.load("z", IMAGE_ID)
    other = "patient00002_study1_view1_frontal"
    new.save("z", other, np.full((14, 4, 4), 2.0))
    assert sorted(new.images("z")) == [other]  # the old model's map is gone
    assert not old.has("z", other) and new.load("z", other)[0, 0, 0] == 2.0
    assert MapStore(tmp_path).has("z", other)  # a store without a model reads any


def test_maps_of_an_earlier_definition_are_stale_and_fold_and_pass_never_mix(tmp_path):
    # An index written before BatchNorms were folded (no "definition") holds Pass-BatchNorm maps
    # under the folded name: never shown, recomputed.
    store = MapStore(tmp_path, model="aaaa")
    store.save("zplus", IMAGE_ID, np.ones((14, 4, 4)))
    index_path = RunFolder(tmp_path).maps("zplus") / "index.json"
    index = json.loads(index_path.read_text())
    assert "batchnorm=fold" in index["definition"]
    del index["definition"]
    index_path.write_text(json.dumps(index))
    assert not store.has("zplus", IMAGE_ID)
    with pytest.raises(MapNotFoundError, match="earlier chexlib"):
        store.load("zplus", IMAGE_ID)
    store.save("zplus-pass", IMAGE_ID, np.full((14, 4, 4), 2.0))
    store.save("zplus", IMAGE_ID, np.full((14, 4, 4), 3.0))
    assert store.load("zplus", IMAGE_ID)[0, 0, 0] == 3.0
    assert store.load("zplus-pass", IMAGE_ID)[0, 0, 0] == 2.0
    assert "batchnorm=pass" in json.loads(
        (RunFolder(tmp_path).maps("zplus-pass") / "index.json").read_text())["definition"]


def test_fill_computes_only_missing_maps_in_batches(tmp_path):
    store = MapStore(tmp_path, durable=False)
    ids = [f"patient{n:05d}_study1_view1_frontal" for n in range(5)]
    store.save("z", ids[1], np.full((14, 3, 3), 1.0))
    calls = []

    def compute(positions):
        calls.append(list(positions))
        return np.stack([np.full((14, 3, 3), 10.0 + p) for p in positions])

    assert store.fill("z", ids, compute, batch_size=2) == 4
    assert calls == [[0, 2], [3, 4]]
    assert [store.load("z", i)[0, 0, 0] for i in ids] == [10.0, 1.0, 12.0, 13.0, 14.0]
    assert store.fill("z", ids, compute) == 0 and len(calls) == 2
    with pytest.raises(MapStoreError, match="returned 1 maps for 2 images"):
        MapStore(tmp_path / "b").fill("z", ids[:2], lambda p: np.ones((1, 14, 3, 3)))
