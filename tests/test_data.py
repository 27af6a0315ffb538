"""chexlib.data: image decoding, the patient split, the image cache and the Dataset.

Every test builds a tiny CheXpert-format folder in tmp_path: 320 x 380 grayscale JPEGs and a
CSV with valid CheXpert paths.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from chexlib.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheXpertDataset,
    ImageCache,
    cache_key,
    denormalize,
    load_grayscale,
    patient_split,
    read_labels,
    resolve_image_path,
    split_frame,
)
from chexlib.data.cache import decode as cache_decode
from chexlib.data.cache import journal as cache_journal
from chexlib.errors import (
    ImageFileError,
    LabelFileError,
    LockBusyError,
    MissingFileError,
    ParameterError,
)
from chexlib.files import file_lock
from chexlib.observations import OBSERVATIONS

DATASET = "CheXpert-v1.0-small"
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
# Row 0's labels: positive, negative, uncertain, blank, then the rest blank.
ROW0_LABELS = ["1.0", "0.0", "-1.0", ""] + [""] * 10
GRAY = 128  # a uniform JPEG of this value decodes back to exactly this value


def _image(kind: int) -> np.ndarray:
    """A 320 x 380 test image; kind 0 is uniform gray, others are distinct gradients."""
    if kind == 0:
        return np.full((320, 380), GRAY, dtype=np.uint8)
    yy, xx = np.mgrid[:320, :380]
    return ((xx * kind + yy * (7 - kind)) % 256).astype(np.uint8)


def make_folder(tmp_path, n_patients=3, views=2, split="train"):
    """Write <tmp>/CheXpert-v1.0-small with <split>.csv and one JPEG per row; return the root."""
    root = tmp_path / DATASET
    rows = []
    for p in range(1, n_patients + 1):
        for v in range(1, views + 1):
            rel = f"{split}/patient{p:05d}/study1/view{v}_frontal.jpg"
            file = root / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(len(rows) % 7)).save(file, "JPEG", quality=95)
            labels = (
                ROW0_LABELS
                if not rows
                else [["1.0", "0.0", "-1.0", ""][(len(rows) + j) % 4] for j in range(14)]
            )
            rows.append([f"{DATASET}/{rel}", "Female", str(40 + p), "Frontal", "AP", *labels])
    write_csv(root / f"{split}.csv", rows)
    return root


def write_csv(path, rows):
    lines = [",".join(HEADER)] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def reference_tensor(gray: np.ndarray) -> torch.Tensor:
    """Independent normalisation: torchvision's normalize of the 3-channel [0, 1] image."""
    x = torch.from_numpy(gray.astype(np.float32) / 255.0).expand(3, -1, -1)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@pytest.fixture
def root(tmp_path):
    return make_folder(tmp_path)


# ------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------


def test_resolve_image_path(tmp_path):
    p = resolve_image_path(
        tmp_path, "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"
    )
    assert p == tmp_path / "valid" / "patient64541" / "study1" / "view1_frontal.jpg"
    for bad in ["view1.jpg", "/abs/train/patient1/study1/view1_frontal.jpg", "x/../../etc/passwd"]:
        with pytest.raises(LabelFileError, match="expected a relative path"):
            resolve_image_path(tmp_path, bad)


def test_load_grayscale_matches_torchvision_resize(root):
    file = root / "train/patient00001/study1/view2_frontal.jpg"
    ours = load_grayscale(file, 96)
    assert ours.shape == (96, 96) and ours.dtype == np.uint8
    with Image.open(file) as img:
        ref = TF.pil_to_tensor(TF.resize(img.convert("L"), [96, 96], TF.InterpolationMode.BILINEAR))
    np.testing.assert_array_equal(ours, ref[0].numpy())


def test_load_grayscale_errors(root):
    with pytest.raises(MissingFileError, match="nothere.jpg"):
        load_grayscale(root / "nothere.jpg", 32)
    with pytest.raises(ParameterError, match="image_size"):
        load_grayscale(root / "train/patient00001/study1/view1_frontal.jpg", 0)


# ------------------------------------------------------------------------------------------
# patient split
# ------------------------------------------------------------------------------------------


def split_frame_fixture(n_patients=200, seed=0):
    rng = np.random.default_rng(seed)
    paths = [
        f"{DATASET}/train/patient{p:05d}/study{s}/view1_frontal.jpg"
        for p in range(1, n_patients + 1)
        for s in range(1, rng.integers(1, 6) + 1)
    ]
    return pd.DataFrame({"Path": paths, "Age": np.arange(len(paths))})


def _patients_of(df, rows):
    return set(df["Path"].iloc[rows].str.split("/").str[2])


def test_split_disjoint_and_complete():
    df = split_frame_fixture()
    train, val = patient_split(df, val_fraction=0.2, seed=1)
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, unique
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(df)))
    assert _patients_of(df, train).isdisjoint(_patients_of(df, val))


def test_split_sizes_near_fraction():
    df = split_frame_fixture(n_patients=1000)
    for fraction in (0.05, 0.1, 0.3):
        _, val = patient_split(df, val_fraction=fraction, seed=0)
        assert len(_patients_of(df, val)) == round(fraction * 1000)
        assert abs(len(val) / len(df) - fraction) < 0.03  # images: close, not exact


def test_split_deterministic_and_seed_dependent():
    df = split_frame_fixture()
    a, b = patient_split(df, 0.1, seed=5), patient_split(df, 0.1, seed=5)
    np.testing.assert_array_equal(a[1], b[1])
    assert _patients_of(df, a[1]) != _patients_of(df, patient_split(df, 0.1, seed=6)[1])


def test_split_independent_of_row_order():
    df = split_frame_fixture()
    shuffled = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    _, val = patient_split(df, 0.15, seed=2)
    _, val_shuffled = patient_split(shuffled, 0.15, seed=2)
    assert set(df["Path"].iloc[val]) == set(shuffled["Path"].iloc[val_shuffled])


def test_split_frame_keeps_index_labels():
    df = split_frame_fixture()
    df.index = df.index + 1000
    train, val = split_frame(df, 0.1, seed=0)
    assert len(train) + len(val) == len(df)
    pd.testing.assert_frame_equal(df.loc[val.index], val)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, float("nan"), "0.1", True])
def test_split_bad_fraction(fraction):
    with pytest.raises(ParameterError, match="val_fraction"):
        patient_split(split_frame_fixture(), val_fraction=fraction)


def test_split_empty_side_names_numbers():
    df = split_frame_fixture(n_patients=4)
    with pytest.raises(
        ParameterError, match=r"val_fraction=0.1 of 4 patients.*validation side empty"
    ):
        patient_split(df, 0.1)
    with pytest.raises(
        ParameterError, match=r"val_fraction=0.9 of 4 patients.*training side empty"
    ):
        patient_split(df, 0.9)


def test_split_bad_paths():
    with pytest.raises(LabelFileError, match="no 'Path' column"):
        patient_split(pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(LabelFileError, match="row 1 has Path 'oops'"):
        patient_split(
            pd.DataFrame({"Path": [f"{DATASET}/train/patient1/study1/view1_frontal.jpg", "oops"]})
        )


# ------------------------------------------------------------------------------------------
# dataset
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 224])
def test_dataset_item_shapes_and_normalisation(root, size):
    ds = CheXpertDataset(root, "train", image_size=size)
    assert len(ds) == 6
    image, target, mask, index = ds[0]
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert target.shape == (14,) and target.dtype == torch.float32
    assert mask.shape == (14,) and mask.dtype == torch.float32
    assert isinstance(index, int) and index == 0
    # Row 0 is uniform gray 128: every pixel of channel c is (128/255 - mean_c) / std_c.
    expected = [(GRAY / 255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    for c in range(3):
        torch.testing.assert_close(
            image[c], torch.full((size, size), expected[c]), rtol=0, atol=1e-6
        )
    # A gradient image against torchvision's normalize of our own decoded pixels.
    image3 = ds[3][0]
    torch.testing.assert_close(image3, reference_tensor(load_grayscale(ds.image_path(3), size)))
    gray = denormalize(image3)
    assert gray.shape == (size, size) and gray.min() >= 0 and gray.max() <= 1
    np.testing.assert_allclose(gray, load_grayscale(ds.image_path(3), size) / 255.0, atol=1e-6)


@pytest.mark.parametrize(
    "policy, target4, mask4",
    [
        ("zeros", [1, 0, 0, 0], [1, 1, 1, 1]),
        ("ones", [1, 0, 1, 0], [1, 1, 1, 1]),
        ("ignore", [1, 0, 0, 0], [1, 1, 0, 1]),
    ],
)
def test_dataset_targets_per_policy(root, policy, target4, mask4):
    # Row 0's first four labels are positive, negative, uncertain, blank.
    ds = CheXpertDataset(root, "train", image_size=32, policy=policy)
    _, target, mask, _ = ds[0]
    assert target[:4].tolist() == target4 and mask[:4].tolist() == mask4
    assert target[4:].tolist() == [0.0] * 10 and mask[4:].tolist() == [1.0] * 10
    assert ds.targets.shape == ds.masks.shape == (6, 14)


def test_dataset_indices_and_row_index(root):
    labels = read_labels(root / "train.csv")
    ds = CheXpertDataset(root, labels, image_size=32, policy="ones", indices=[4, 1])
    assert len(ds) == 2
    image, target, _, index = ds[0]
    assert index == 4
    raw = labels.loc[4, list(OBSERVATIONS)].to_numpy(dtype=float)
    assert target.tolist() == [1.0 if v in (1.0, -1.0) else 0.0 for v in raw]
    torch.testing.assert_close(
        image, reference_tensor(load_grayscale(root / labels["Path"][4].split("/", 1)[1], 32))
    )
    assert ds[1][3] == 1
    with pytest.raises(ParameterError, match="indices"):
        CheXpertDataset(root, labels, image_size=32, indices=[6])


def test_dataset_valid_split_and_bad_arguments(tmp_path):
    root = make_folder(tmp_path, n_patients=2, views=1, split="valid")
    assert len(CheXpertDataset(root, "valid", image_size=32)) == 2
    with pytest.raises(MissingFileError, match="train.csv"):
        CheXpertDataset(root, "train")
    with pytest.raises(MissingFileError, match="not a folder"):
        CheXpertDataset(tmp_path / "nope", "valid")
    with pytest.raises(ValueError, match="uncertainty policy"):
        CheXpertDataset(root, "valid", policy="maybe")


def test_dataset_transform_applied(root):
    ds = CheXpertDataset(root, "train", image_size=32, transform=lambda x: x.flip(-1))
    plain = CheXpertDataset(root, "train", image_size=32)
    torch.testing.assert_close(ds[3][0], plain[3][0].flip(-1))


def _file(root, row):
    return (
        root / "train" / f"patient{row // 2 + 1:05d}" / "study1" / f"view{row % 2 + 1}_frontal.jpg"
    )


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("cached", [False, True])
def test_missing_and_corrupt_images_name_the_file(root, tmp_path, cached):
    missing, truncated, garbage = _file(root, 1), _file(root, 2), _file(root, 3)
    missing.unlink()
    _truncate(truncated)
    garbage.write_bytes(os.urandom(2000))
    ds = CheXpertDataset(
        root,
        "train",
        image_size=32,
        cache_dir=tmp_path / "cache" if cached else None,
        progress=False,
    )
    with pytest.raises(MissingFileError, match=str(missing)):
        ds[1]
    with pytest.raises(ImageFileError, match=str(truncated)):
        ds[2]
    with pytest.raises(ImageFileError, match=str(garbage)):
        ds[3]
    ds[0], ds[4]  # the other images still load
    if cached:
        assert sorted(ds.cache.failed) == [1, 2, 3]


def test_cached_and_uncached_identical(root, tmp_path):
    plain = CheXpertDataset(root, "train", image_size=48, policy="ignore")
    cached = CheXpertDataset(
        root, "train", image_size=48, policy="ignore", cache_dir=tmp_path / "c", progress=False
    )
    for i in range(len(plain)):
        for a, b in zip(plain[i][:3], cached[i][:3]):
            assert torch.equal(a, b)


def test_dataset_pickles_without_the_array(root, tmp_path):
    ds = CheXpertDataset(root, "train", image_size=64, cache_dir=tmp_path / "c", progress=False)
    ds[0]  # maps the array
    blob = pickle.dumps(ds)
    assert len(blob) < 6 * 64 * 64  # the pixels are not in the pickle
    assert torch.equal(pickle.loads(blob)[3][0], ds[3][0])


# ------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------


def _open(root, tmp_path, size=32, labels=None, **kw):
    labels = read_labels(root / "train.csv") if labels is None else labels
    return ImageCache.open_or_build(root, labels, size, tmp_path / "cache", progress=False, **kw)


def test_cache_contents_and_files(root, tmp_path):
    cache = _open(root, tmp_path)
    assert cache.rebuilt and cache.array.shape == (6, 32, 32) and cache.array.dtype == np.uint8
    for row in range(6):
        np.testing.assert_array_equal(cache.array[row], load_grayscale(_file(root, row), 32))
    # No temp or partial files left; the (empty) build lock stays, see chexlib.files.file_lock.
    assert _names(tmp_path / "cache") == _finished_names(cache.key)
    assert cache.meta["n"] == 6 and cache.meta["image_size"] == 32 and cache.meta["failed"] == {}


def test_cache_reused(root, tmp_path):
    first = _open(root, tmp_path)
    stamp = first.path.stat().st_mtime_ns, (first.path.with_suffix(".json")).stat().st_mtime_ns
    second = _open(root, tmp_path)
    assert not second.rebuilt and second.key == first.key and second.reason == "reused"
    assert (
        second.path.stat().st_mtime_ns,
        second.path.with_suffix(".json").stat().st_mtime_ns,
    ) == stamp


def test_cache_reused_by_another_process(root, tmp_path):
    first = _open(root, tmp_path)
    code = (
        "import sys; from chexlib.data import ImageCache, read_labels; "
        "c = ImageCache.open_or_build(sys.argv[1], read_labels(sys.argv[1] + '/train.csv'), "
        "32, sys.argv[2], progress=False); "
        "print(c.key, c.rebuilt)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [first.key, "False"]


def test_cache_invalidated_by_csv_size_and_file_list(root, tmp_path):
    base = _open(root, tmp_path)
    assert _open(root, tmp_path, size=40).rebuilt  # image size
    labels = read_labels(root / "train.csv")
    assert _open(root, tmp_path, labels=labels.iloc[:5]).rebuilt  # file list
    # CSV content: change one label value (same file list, same size).
    text = (root / "train.csv").read_text().splitlines()
    text[1] = text[1].replace(",1.0,", ",0.0,", 1)
    (root / "train.csv").write_text("\n".join(text) + "\n")
    changed = _open(root, tmp_path)
    assert changed.rebuilt and changed.key != base.key


def test_cache_invalidated_when_an_image_is_replaced_under_the_same_csv(root, tmp_path):
    """A regenerated data set (same CSV and paths, new pixels) must not be served stale."""
    first = _open(root, tmp_path)
    labels = read_labels(root / "train.csv")
    victim = resolve_image_path(root, labels["Path"].iloc[0])
    Image.fromarray(np.full((50, 40), 200, np.uint8)).save(victim, "JPEG", quality=95)
    again = _open(root, tmp_path)
    assert again.rebuilt and again.key != first.key
    np.testing.assert_array_equal(again.array[0], load_grayscale(victim, 32))


@pytest.mark.parametrize(
    "damage",
    ["truncate_npy", "delete_npy", "wrong_shape", "garbage_json", "delete_json", "wrong_key"],
)
def test_cache_damage_detected_and_rebuilt(root, tmp_path, damage):
    cache = _open(root, tmp_path)
    npy, meta = cache.path, cache.path.with_suffix(".json")
    reference = np.array(cache.array)
    del cache
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "delete_npy":
        npy.unlink()
    elif damage == "wrong_shape":
        np.save(npy, np.zeros((5, 32, 32), dtype=np.uint8))
    elif damage == "garbage_json":
        meta.write_text("{")
    elif damage == "delete_json":
        meta.unlink()
    elif damage == "wrong_key":
        meta.write_text(meta.read_text().replace('"key": "', '"key": "0'))
    again = _open(root, tmp_path)
    assert again.rebuilt, again.reason
    np.testing.assert_array_equal(again.array, reference)


def test_killed_build_not_read_as_valid(root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cache_decode.load_grayscale

    def dies_on_third(path, size):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # like Ctrl-C in a notebook
        return real(path, size)

    monkeypatch.setattr(cache_decode, "load_grayscale", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        _open(root, tmp_path)
    # Only the resumable partial build is left: nothing that could look complete.
    key = cache_key(root, read_labels(root / "train.csv"), 32)
    assert _names(tmp_path / "cache") <= {
        f".{key}.partial.npy",
        f".{key}.partial.jsonl",
        f".{key}.lock",
    }
    monkeypatch.undo()
    # A hard kill (no cleanup) leaves temp files and perhaps an array without metadata.
    good = _open(root, tmp_path)
    good.path.with_suffix(".json").unlink()
    stale = [
        tmp_path / "cache" / f".{good.key}.otherhost.12345.abcd1234.tmp",  # array, old versions
        tmp_path / "cache" / f".{good.key}.json.12345.0123456789ab.tmp",  # atomic_write_json's
    ]
    for file in stale:
        file.write_bytes(b"partial")
    again = _open(root, tmp_path)
    assert again.rebuilt and not any(file.exists() for file in stale)
    np.testing.assert_array_equal(again.array[5], load_grayscale(_file(root, 5), 32))


def test_parallel_build_equals_serial(root, tmp_path):
    serial = _open(root, tmp_path)
    parallel = ImageCache.open_or_build(
        root, read_labels(root / "train.csv"), 32, tmp_path / "par", workers=2, progress=False
    )
    assert parallel.rebuilt and parallel.key == serial.key
    np.testing.assert_array_equal(parallel.array, serial.array)


def test_failed_images_retried_when_repaired(root, tmp_path):
    file = _file(root, 2)
    saved = file.read_bytes()
    file.unlink()
    cache = _open(root, tmp_path)
    assert list(cache.failed) == [2] and cache.failed[2]["error"] == "MissingFileError"
    with pytest.raises(MissingFileError, match=str(file)):
        cache.image(2)
    file.write_bytes(saved)
    again = _open(root, tmp_path)
    # The repaired file has a new size/mtime, so the key changes and the cache is rebuilt.
    assert again.rebuilt and again.failed == {}
    np.testing.assert_array_equal(again.image(2), load_grayscale(file, 32))
    assert not _open(root, tmp_path).failed  # the repair was written to the metadata


# resume and lock ----------------------------------------------------------------------------


def _names(folder):
    return {p.name for p in folder.iterdir()}


def _finished_names(key):
    """The files a finished build leaves: array, metadata and the (empty) lock file."""
    return {f"{key}.npy", f"{key}.json", f".{key}.lock"}


class _Decoder:
    """Stand-in for the cache's load_grayscale: counts calls and can fail on call ``fail_at``."""

    def __init__(self, fail_at=None):
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, path, size):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("decoding interrupted on purpose")
        return load_grayscale(path, size)


def _decoder(monkeypatch, fail_at=None):
    decoder = _Decoder(fail_at)
    monkeypatch.setattr(cache_decode, "load_grayscale", decoder)
    return decoder


@pytest.fixture
def root12(tmp_path, monkeypatch):
    """12 images, cached in chunks of 3 rows: [0, 3), [3, 6), [6, 9), [9, 12)."""
    monkeypatch.setattr(cache_journal, "CHUNK_ROWS", 3)
    return make_folder(tmp_path, n_patients=6)


def _reference(root, tmp_path):
    """The array of a cache built from scratch in a separate folder."""
    cache = ImageCache.open_or_build(
        root, read_labels(root / "train.csv"), 32, tmp_path / "reference", progress=False
    )
    return np.array(cache.array)


def _interrupt_after_two_chunks(root, tmp_path, monkeypatch):
    """Build until row 7 (chunk [6, 9)) raises: chunks [0, 3) and [3, 6) are finished."""
    _decoder(monkeypatch, fail_at=8)
    with pytest.raises(RuntimeError, match="on purpose"):
        _open(root, tmp_path)
    key = cache_key(root, read_labels(root / "train.csv"), 32)
    return tmp_path / "cache" / f".{key}.partial.npy", tmp_path / "cache" / f".{key}.partial.jsonl"


def test_cache_resumes_after_an_exception(root12, tmp_path, monkeypatch, capsys, caplog):
    reference = _reference(root12, tmp_path)
    partial, journal = _interrupt_after_two_chunks(root12, tmp_path, monkeypatch)
    key = cache_key(root12, read_labels(root12 / "train.csv"), 32)
    assert partial.is_file() and journal.is_file()
    assert not (tmp_path / "cache" / f"{key}.json").exists()
    capsys.readouterr()
    decoder = _decoder(monkeypatch)
    with caplog.at_level(logging.INFO, logger="chexlib.data.cache"):
        again = ImageCache.open_or_build(
            root12, read_labels(root12 / "train.csv"), 32, tmp_path / "cache", progress=True
        )
    assert decoder.calls == 6  # rows 6..11 only: the finished chunks were not decoded again
    assert again.rebuilt and again.failed == {} and again.meta["n_ok"] == 12
    np.testing.assert_array_equal(again.array, reference)
    assert _names(tmp_path / "cache") == _finished_names(key)
    assert "6 of 12 images already cached" in caplog.text
    bar = capsys.readouterr().err
    # The bar starts at the rows already done (6/12, never 0/12) and ends full.
    assert "(resuming)" in bar and "12/12" in bar and not re.search(r"(?<!\d)0/12", bar)


def test_cache_resumes_after_sigkill(tmp_path, monkeypatch):
    root = make_folder(tmp_path, n_patients=24)  # 48 images
    labels = read_labels(root / "train.csv")
    key = cache_key(root, labels, 32)
    cache_dir = tmp_path / "cache"
    journal = cache_dir / f".{key}.partial.jsonl"
    builder = _start_builder(root, cache_dir, delay=0.05, chunk_rows=4)
    try:
        deadline = time.monotonic() + 120
        while _finished_chunks(journal) < 1:
            assert builder.poll() is None, builder.communicate()
            assert time.monotonic() < deadline, "the builder finished no chunk"
            time.sleep(0.01)
        builder.kill()  # SIGKILL: no cleanup of any kind
        builder.wait(timeout=30)
    finally:
        if builder.poll() is None:
            builder.kill()
            builder.wait()
    assert builder.returncode != 0 and not (cache_dir / f"{key}.json").exists()
    done = _finished_chunks(journal)
    assert 1 <= done < 12  # killed mid-build
    decoder = _decoder(monkeypatch)
    again = ImageCache.open_or_build(root, labels, 32, cache_dir, progress=False)
    assert again.rebuilt and decoder.calls == 48 - 4 * done
    monkeypatch.undo()
    np.testing.assert_array_equal(again.array, _reference(root, tmp_path))
    assert _names(cache_dir) == _finished_names(key)


def test_cache_resume_ignores_torn_and_off_grid_journal_lines(root12, tmp_path, monkeypatch):
    reference = _reference(root12, tmp_path)
    _, journal = _interrupt_after_two_chunks(root12, tmp_path, monkeypatch)
    entry = {"path": "x.jpg", "error": "ImageFileError", "message": "m"}
    with open(journal, "a") as f:
        f.write(json.dumps({"start": 6, "stop": 8, "failed": {}}) + "\n")  # off the grid
        f.write(json.dumps({"start": 9, "stop": 12, "failed": {"3": entry}}) + "\n")  # row 3?
        f.write(json.dumps({"start": 9, "stop": 12, "failed": {}})[:20])  # torn by a kill
    # Interrupt the resume once more after it finished chunk [6, 9): its journal line must
    # not be glued to the torn line (the journal is rewritten without the bad lines).
    decoder = _decoder(monkeypatch, fail_at=5)
    with pytest.raises(RuntimeError, match="on purpose"):
        _open(root12, tmp_path)
    assert decoder.calls == 5
    decoder = _decoder(monkeypatch)
    again = _open(root12, tmp_path)
    assert decoder.calls == 3 and again.rebuilt and again.failed == {}
    np.testing.assert_array_equal(again.array, reference)


@pytest.mark.parametrize("damage", ["wrong_shape", "truncated", "journal_header"])
def test_cache_unusable_partial_is_rebuilt(root12, tmp_path, monkeypatch, damage):
    reference = _reference(root12, tmp_path)
    partial, journal = _interrupt_after_two_chunks(root12, tmp_path, monkeypatch)
    if damage == "wrong_shape":
        np.save(partial, np.zeros((5, 32, 32), dtype=np.uint8))
    elif damage == "truncated":
        partial.write_bytes(partial.read_bytes()[:-100])
    else:
        lines = journal.read_text().splitlines()
        journal.write_text("\n".join([lines[0].replace('"n": 12', '"n": 13'), *lines[1:]]) + "\n")
    decoder = _decoder(monkeypatch)
    again = _open(root12, tmp_path)
    assert decoder.calls == 12 and again.rebuilt  # started afresh
    np.testing.assert_array_equal(again.array, reference)
    assert _names(tmp_path / "cache") == _finished_names(again.key)


def test_cache_resume_with_another_worker_count(root12, tmp_path, monkeypatch):
    reference = _reference(root12, tmp_path)
    _interrupt_after_two_chunks(root12, tmp_path, monkeypatch)
    monkeypatch.undo()
    labels = read_labels(root12 / "train.csv")
    key = cache_key(root12, labels, 32)
    # Corrupt the images of the finished rows 0..5, keeping size and time stamp (so the key):
    # decoding any of them again, in whichever process, would record a failure.
    for row in range(6):
        file = _file(root12, row)
        st = file.stat()
        file.write_bytes(b"\0" * st.st_size)
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_key(root12, labels, 32) == key
    again = _open(root12, tmp_path, workers=2)
    assert again.rebuilt and again.failed == {}
    np.testing.assert_array_equal(again.array, reference)


def test_cache_lock_two_processes_build_once(tmp_path):
    root = make_folder(tmp_path, n_patients=6)  # 12 images, ~1.2 s to build at 0.1 s each
    cache_dir = tmp_path / "cache"
    builders = [_start_builder(root, cache_dir, delay=0.1, chunk_rows=4, sync=True) for _ in "ab"]
    try:
        for builder in builders:  # both have imported everything: start them together
            assert builder.stdout.readline().strip() == "ready", builder.communicate()
        for builder in builders:
            builder.stdin.write("go\n")
            builder.stdin.flush()
        results = [builder.communicate(timeout=120) for builder in builders]
    finally:
        for builder in builders:
            if builder.poll() is None:
                builder.kill()
                builder.wait()
    assert [b.returncode for b in builders] == [0, 0], results
    rebuilt = sorted(out.split()[0] for out, _ in results)
    assert rebuilt == ["False", "True"], results  # one built it, the other reused it
    assert sum("waiting for the lock file" in err for _, err in results) == 1, results
    key = cache_key(root, read_labels(root / "train.csv"), 32)
    assert {out.split()[1] for out, _ in results} == {key}
    cache = ImageCache.open_or_build(root, read_labels(root / "train.csv"), 32, cache_dir)
    assert not cache.rebuilt
    np.testing.assert_array_equal(cache.array, _reference(root, tmp_path))
    assert _names(cache_dir) == _finished_names(key)


_BUILDER = """
import sys, time
from chexlib.data import ImageCache, read_labels
from chexlib.data.cache import decode, journal
root, cache_dir, delay, chunk_rows, sync = sys.argv[1:]
journal.CHUNK_ROWS = int(chunk_rows)
real = decode.load_grayscale
def slow(path, size):
    time.sleep(float(delay))
    return real(path, size)
decode.load_grayscale = slow
labels = read_labels(root + "/train.csv")
if sync == "sync":
    print("ready", flush=True)
    sys.stdin.readline()
cache = ImageCache.open_or_build(root, labels, 32, cache_dir, progress=False)
print(cache.rebuilt, cache.key, flush=True)
"""


def _start_builder(root, cache_dir, delay, chunk_rows, sync=False):
    """A process building the cache of ``root`` at 32 px, decoding slowly (``delay`` s each)."""
    args = [str(root), str(cache_dir), str(delay), str(chunk_rows), "sync" if sync else "-"]
    return subprocess.Popen(
        [sys.executable, "-c", _BUILDER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished_chunks(journal):
    """Journal lines that record a finished chunk (the header and torn lines do not)."""
    if not journal.exists():
        return 0
    count = 0
    for line in journal.read_text().splitlines():
        try:
            count += "start" in json.loads(line)
        except ValueError:
            pass
    return count


def test_file_lock_nonblocking_names_the_lock_file(tmp_path):
    lock = tmp_path / "locks" / "resource.lock"
    code = (
        "import sys\nfrom chexlib.files import file_lock\n"
        "with file_lock(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.readline()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(LockBusyError, match=re.escape(str(lock))) as err,
            file_lock(lock, blocking=False, what="the test resource"),
        ):
            pass
        assert "the test resource" in str(err.value) and isinstance(err.value, TimeoutError)
        started = time.monotonic()
        gave_up = r"gave up after 0\.2 s .*" + re.escape(str(lock))
        with pytest.raises(LockBusyError, match=gave_up), file_lock(lock, timeout=0.2):
            pass
        assert time.monotonic() - started >= 0.2
    finally:
        holder.kill()  # SIGKILL: the kernel still releases the lock
        holder.wait()
    with file_lock(lock, blocking=False) as held:
        assert held == lock
    for bad in [{"timeout": -1}, {"timeout": float("nan")}, {"blocking": False, "timeout": 1}]:
        with pytest.raises(ParameterError, match="timeout"), file_lock(lock, **bad):
            pass
