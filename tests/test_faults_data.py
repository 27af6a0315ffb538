"""Fault matrix, data rows: what happens when the data folder, an image or a label file is wrong.

One test (or one parametrized test) per row of the README table "what happens when ...". Each
case either works as documented or stops with the chexlib error that names the file, the row or
the parameter and what was expected; no test case may change or lose a file it was given.

Folders are tiny CheXpert-format trees in tmp_path (small grayscale JPEGs, a CSV with valid
CheXpert paths), never a full phantom.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from chexlib.data import (
    CheXpertDataset,
    load_grayscale,
    patient_split,
    read_labels,
    read_radiograph,
    resolve_image_path,
    split_frame,
)
from chexlib.data.labels import PATH_PATTERN, REQUIRED_COLUMNS
from chexlib.data.summary import cooccurrence, pick_examples, policy_positive_rates
from chexlib.errors import ImageFileError, LabelFileError, MissingFileError, ParameterError
from chexlib.metrics import auprc, auroc, per_class_table, summary
from chexlib.observations import OBSERVATIONS

DATASET = "CheXpert-v1.0-small"
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
ALLOWED = "expected 1.0, 0.0, -1.0 or blank"


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _labels(row: int) -> list[str]:
    return [["1.0", "0.0", "-1.0", ""][(row + j) % 4] for j in range(14)]


def _rel(row: int, split: str = "train", views: int = 2) -> str:
    return f"{split}/patient{row // views + 1:05d}/study1/view{row % views + 1}_frontal.jpg"


def _csv_row(row: int, split: str = "train", views: int = 2) -> list[str]:
    return [f"{DATASET}/{_rel(row, split, views)}", "Female", str(40 + row), "Frontal", "AP",
            *_labels(row)]


def _gradient(kind: int, shape=(48, 40)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((xx * (kind + 1) + yy * (7 - kind % 7)) % 256).astype(np.uint8)


def make_folder(tmp_path, n_rows=6, split="train", views=2):
    """<tmp>/CheXpert-v1.0-small with <split>.csv and one small JPEG per row; return the root."""
    root = tmp_path / DATASET
    for row in range(n_rows):
        file = root / _rel(row, split, views)
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_gradient(row)).save(file, "JPEG", quality=90)
    _write_csv(root / f"{split}.csv", [_csv_row(r, split, views) for r in range(n_rows)])
    return root


def _write_csv(path, rows, header=HEADER, sep=",", newline="\n", bom=False):
    text = newline.join(sep.join(r) for r in [header, *rows]) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _snapshot(folder) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative path -> hex digest)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------
# missing image folder
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
@pytest.mark.parametrize("what", ["data_root_missing", "split_folder_missing"])
def test_missing_image_folder_names_the_folder(tmp_path, what, cached):
    root = make_folder(tmp_path)
    cache_dir = tmp_path / "cache"
    if what == "data_root_missing":
        target = tmp_path / "nowhere"
        expected = [str(target), "not a folder", "train.csv"]
    else:
        for file in sorted((root / "train").rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        (root / "train").rmdir()
        target = root
        expected = [str(root / "train"), "train.csv", "6 of the 6 rows", _csv_row(0)[0]]
    before = _snapshot(tmp_path)
    with pytest.raises(MissingFileError) as info:
        CheXpertDataset(target, "train", image_size=16, progress=False,
                        cache_dir=cache_dir if cached else None)
    for part in expected:
        assert part in str(info.value), (part, str(info.value))
    assert _snapshot(tmp_path) == before  # nothing written: no cache of an absent folder


# ------------------------------------------------------------------------------------------
# missing or unreadable images
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_missing_or_unreadable_images_reported_with_count_and_first_paths(tmp_path, cached):
    root = make_folder(tmp_path, n_rows=12)
    missing_rows = [1, 2, 3, 5, 7, 10]
    for row in missing_rows:
        (root / _rel(row)).unlink()
    garbage = root / _rel(8)
    garbage.write_bytes(b"this is not a JPEG" * 50)
    before = _snapshot(root)
    # Uncached, missing files are found at construction (one stat each) and corrupt ones only
    # when read; the cache decodes every image, so it knows both.
    bad_rows = sorted(missing_rows + ([8] if cached else []))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = CheXpertDataset(root, "train", image_size=16, progress=False,
                             cache_dir=tmp_path / "cache" if cached else None)
    messages = [str(w.message) for w in record if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    text = messages[0]
    assert f"{len(bad_rows)} of 12 images" in text and str(root / "train.csv") in text
    shown, hidden = bad_rows[:5], bad_rows[5:]
    for row in shown:
        assert str(root / _rel(row)) in text
    for row in hidden:
        assert str(root / _rel(row)) not in text
    assert f"and {len(hidden)} more" in text
    assert sorted(ds.unreadable) == bad_rows
    # Access: an error naming the file; the other rows still load.
    with pytest.raises(MissingFileError, match=re.escape(str(root / _rel(1)))):
        ds[1]
    with pytest.raises(ImageFileError, match=re.escape(str(garbage))):
        ds[8]
    assert ds[0][0].shape == (3, 16, 16) and ds[11][0].shape == (3, 16, 16)
    # Only the rows a dataset serves are counted.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        part = CheXpertDataset(root, "train", image_size=16, progress=False, indices=[0, 1, 4],
                               cache_dir=tmp_path / "cache" if cached else None)
    assert sorted(part.unreadable) == [1]
    assert any("1 of 3 images" in str(w.message) for w in record)
    # Nothing unreadable: no warning.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clean = CheXpertDataset(root, "train", image_size=16, progress=False, indices=[0, 4, 6],
                                cache_dir=tmp_path / "cache" if cached else None)
    assert clean.unreadable == {} and not [w for w in record if "could not be read" in
                                           str(w.message)]
    assert _snapshot(root) == before


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_missing_or_unreadable_images_none_readable_stops(tmp_path, cached):
    root = make_folder(tmp_path, n_rows=4)
    for row in range(4):
        (root / _rel(row)).unlink()
    with pytest.raises(MissingFileError) as info:
        CheXpertDataset(root, "train", image_size=16, progress=False,
                        cache_dir=tmp_path / "cache" if cached else None)
    text = str(info.value)
    assert "none of the 4 images" in text and str(root / _rel(0)) in text
    assert str(root / "train.csv") in text


# ------------------------------------------------------------------------------------------
# corrupt and truncated JPEGs
# ------------------------------------------------------------------------------------------


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_gradient(3, shape=(190, 160))).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _damaged(kind: str) -> bytes:
    data = _jpeg_bytes()
    if kind == "garbage_bytes":
        return np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    if kind == "truncated_half":
        return data[: len(data) // 2]
    if kind == "truncated_after_header":
        return data[:700]
    # An interrupted download into a preallocated file: the right length, the rest zeros.
    return data[: len(data) // 2] + bytes(len(data) - len(data) // 2)


# Not in this matrix: noise written *over* a JPEG's compressed data (same length, end marker
# intact). JPEG has no checksum and libjpeg decodes such a file with artefacts and no error,
# so chexlib cannot detect it (documented in chexlib.data.images).
@pytest.mark.parametrize("load_truncated", [False, True], ids=["default", "LOAD_TRUNCATED_on"])
@pytest.mark.parametrize(
    "kind", ["garbage_bytes", "truncated_half", "truncated_after_header", "zero_filled_tail"]
)
def test_corrupt_or_truncated_jpeg_names_the_file(tmp_path, monkeypatch, kind, load_truncated):
    # Another library in the process may have turned PIL's LOAD_TRUNCATED_IMAGES on: chexlib
    # must still refuse a half image instead of padding it with gray.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    path = tmp_path / "view1_frontal.jpg"
    path.write_bytes(_damaged(kind))
    before = path.read_bytes()
    for decode in (lambda p: load_grayscale(p, 16), read_radiograph):
        with pytest.raises(ImageFileError) as info:
            decode(path)
        assert str(path) in str(info.value) and "corrupt" in str(info.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is load_truncated  # the caller's setting is kept
    assert path.read_bytes() == before
    good = tmp_path / "good.jpg"
    good.write_bytes(_jpeg_bytes())
    assert load_grayscale(good, 16).shape == (16, 16)


# ------------------------------------------------------------------------------------------
# CSV variants that must work
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["utf8_bom", "windows_line_endings", "extra_columns", "all"])
def test_csv_bom_crlf_extra_columns_work(tmp_path, variant):
    rows = [_csv_row(r) for r in range(4)]
    plain = read_labels(_write_csv(tmp_path / "plain.csv", rows))
    header, body = HEADER, rows
    extra = variant in ("extra_columns", "all")
    if extra:  # one in the middle, one at the end, with a quoted comma
        header = HEADER[:5] + ["Notes"] + HEADER[5:] + ["Site"]
        body = [r[:5] + [f'"note, {i}"'] + r[5:] + [f"site{i}"] for i, r in enumerate(rows)]
    path = _write_csv(
        tmp_path / "train.csv", body, header=header,
        newline="\r\n" if variant in ("windows_line_endings", "all") else "\n",
        bom=variant in ("utf8_bom", "all"),
    )
    before = path.read_bytes()
    df = read_labels(path)
    assert list(df.columns) == [h for h in header]
    pd.testing.assert_frame_equal(df[HEADER], plain[HEADER])
    assert not df["Path"].str.contains("[\r\ufeff]").any()
    if extra:
        assert df["Notes"].tolist() == [f"note, {i}" for i in range(4)]
        assert df["Site"].tolist() == [f"site{i}" for i in range(4)]
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------
# wrong delimiter
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["whole_file", "rows_only"])
@pytest.mark.parametrize("sep, name", [(";", "semicolon"), ("\t", "tab")], ids=["semicolon", "tab"])
def test_wrong_delimiter_names_file_and_delimiter(tmp_path, sep, name, where):
    rows = [_csv_row(r) for r in range(3)]
    path = tmp_path / "train.csv"
    if where == "whole_file":
        _write_csv(path, rows, sep=sep)
    else:  # header comma-separated, the rows not (a file pasted together from two sources)
        text = ",".join(HEADER) + "\n" + "\n".join(sep.join(r) for r in rows) + "\n"
        path.write_text(text)
    before = path.read_bytes()
    with pytest.raises(LabelFileError) as info:
        read_labels(path)
    text = str(info.value)
    assert str(path) in text and "comma-separated" in text and f"{name}-separated" in text
    if where == "rows_only":
        assert "line 2" in text
    assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------
# label value out of range
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2.0", "yes", "-2", "0.5", "nan", "1.0.0"])
def test_label_out_of_range_names_file_line_column_and_allowed_values(tmp_path, value):
    rows = [_csv_row(r) for r in range(3)]
    rows[1][HEADER.index("Cardiomegaly")] = value
    path = _write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(LabelFileError) as info:
        read_labels(path)
    text = str(info.value)
    assert str(path) in text and "line 3" in text and "column 'Cardiomegaly'" in text
    assert repr(value) in text and ALLOWED in text


# ------------------------------------------------------------------------------------------
# empty split after filtering
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "patient_split_no_rows",
        "split_frame_no_rows",
        "patient_split_one_patient",
        "dataset_frame_no_rows",
        "dataset_frame_no_rows_cached",
        "dataset_empty_indices",
    ],
)
def test_empty_split_after_filtering_names_the_parameter(tmp_path, case):
    root = make_folder(tmp_path, n_rows=4)
    labels = read_labels(root / "train.csv")
    nothing = labels[labels["Sex"] == "Other"]  # a filter that leaves no rows
    if case == "patient_split_no_rows":
        call, expected = (lambda: patient_split(nothing, 0.2)), [r"\bdf\b", "no rows"]
    elif case == "split_frame_no_rows":
        call, expected = (lambda: split_frame(nothing, 0.2)), [r"\bdf\b", "no rows"]
    elif case == "patient_split_one_patient":
        one = labels[labels["Path"].str.contains("patient00001")]
        call, expected = (lambda: patient_split(one, 0.2)), ["val_fraction", "1 patient",
                                                            "validation side empty"]
    elif case.startswith("dataset_frame_no_rows"):
        cache = tmp_path / "cache" if case.endswith("cached") else None

        def call():
            return CheXpertDataset(root, nothing, image_size=16, cache_dir=cache, progress=False)

        expected = [r"\blabels\b", "no rows"]
    else:
        def call():
            return CheXpertDataset(root, labels, image_size=16, indices=[])

        expected = [r"\bindices\b", "empty", "at least one"]
    with pytest.raises(ParameterError) as info:
        call()
    for pattern in expected:
        assert re.search(pattern, str(info.value)), (pattern, str(info.value))


# ------------------------------------------------------------------------------------------
# a class without positives
# ------------------------------------------------------------------------------------------


def test_class_without_positives_gives_nan_not_a_crash(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    y_true = (rng.random((n, 14)) < 0.3).astype(float)
    y_true[:, 2] = 0  # Cardiomegaly: no positives in this split
    y_true[:, 5] = 1  # Edema: no negatives
    y_prob = rng.random((n, 14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "no crash" includes no RuntimeWarning noise
        a, p = auroc(y_true, y_prob), auprc(y_true, y_prob)
        assert np.isnan(a[[2, 5]]).all() and np.isnan(p[[2, 5]]).all()
        assert np.isfinite(np.delete(a, [2, 5])).all()
        table = per_class_table(y_true, y_prob, n_boot=20, groups=np.arange(n) // 2)
        assert not table.loc["Cardiomegaly", "defined"] and "no positives" in table.loc[
            "Cardiomegaly", "note"]
        assert not table.loc["Edema", "defined"] and "no negatives" in table.loc["Edema", "note"]
        means = summary(table)
        assert math.isfinite(means["macro_auroc"]) and means["n_defined"] == 12
        assert set(means["undefined"]) == {"Cardiomegaly", "Edema"}
        assert "Cardiomegaly" not in means["competition_classes"]
    # The label summaries of notebook 01 on a split without Cardiomegaly positives.
    root = make_folder(tmp_path, n_rows=6)
    labels = read_labels(root / "train.csv")
    labels["Cardiomegaly"] = 0.0
    labels["Edema"] = -1.0  # all uncertain: under U-Ignore nothing counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        co = cooccurrence(labels)
        assert co.loc["Cardiomegaly"].isna().all()
        rates = policy_positive_rates(labels)
        assert rates.loc["Cardiomegaly"].tolist() == [0.0, 0.0, 0.0]
        assert np.isnan(rates.loc["Edema", "ignore"]) and rates.loc["Edema", "ones"] == 100.0
        picks = pick_examples(labels, ["Cardiomegaly", "Lung Opacity"], n=4)
        assert len(picks) == 4 and len(set(picks)) == 4
        _, val_rows = patient_split(labels, 0.34, seed=0)
        ds = CheXpertDataset(root, labels, image_size=16, indices=val_rows)
        assert (ds.targets[:, 2] == 0).all()


# ------------------------------------------------------------------------------------------
# fuzzing read_labels
# ------------------------------------------------------------------------------------------

INTERESTING = [
    "1.0", "0.0", "-1.0", "", "1", "0", "-1", "2", "yes", "nan", "NaN", " 1.0 ", "1e0", "-0",
    "inf", "1e400", "18446744073709551616", "130", "131", "٣", '"', "\n", "\r", "\x00", "\ufeff",
    "Path", "Age", "No Finding", ";", "\t",
    f"{DATASET}/train/patient00001/study1/view1_frontal.jpg",
    "./train/patient00009/study1/view1_frontal.jpg",
    "../train/patient00009/study1/view1_frontal.jpg",
    "x/valid/patient7/study2/view3_lateral.jpg",
    "x/valid/patient7/study2/view3_lateral.jpg\n",
]
SEPARATORS = [",", ";", "\t", "|"]
_text_edit = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 3000), st.sampled_from(INTERESTING) | st.text()),
    st.tuples(st.just("delete"), st.integers(0, 3000), st.integers(1, 200)),
)
_mutation = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, 4), st.integers(0, 20),
              st.sampled_from(INTERESTING) | st.text(max_size=8)),
    st.tuples(st.just("header"), st.integers(0, 20), st.sampled_from(HEADER + ["", "Extra"])),
    st.tuples(st.just("drop_col"), st.integers(0, 20)),
    st.tuples(st.just("add_col"), st.integers(0, 20), st.sampled_from(["Extra", "Path", ""])),
    st.tuples(st.just("dup_row"), st.integers(0, 4)),
    st.tuples(st.just("drop_row"), st.integers(0, 4)),
)


@st.composite
def mutated_csv(draw):
    """A valid 3-row CheXpert CSV with a few random mutations, as (file name, bytes)."""
    table = [list(HEADER)] + [_csv_row(r) for r in range(3)]
    for op in draw(st.lists(_mutation, max_size=4)):
        kind = op[0]
        if kind == "cell":
            row = table[op[1] % len(table)]
            if row:
                row[op[2] % len(row)] = op[3]
        elif kind == "header":
            table[0][op[1] % len(table[0])] = op[2]
        elif kind == "drop_col" and len(table[0]) > 1:
            j = op[1] % len(table[0])
            table = [r[:j] + r[j + 1:] for r in table]
        elif kind == "add_col":
            j = op[1] % (len(table[0]) + 1)
            table = [r[:j] + [op[2] if i == 0 else "v"] + r[j:] for i, r in enumerate(table)]
        elif kind == "dup_row":
            table.append(list(table[op[1] % len(table)]))
        elif kind == "drop_row" and len(table) > 1:
            del table[1 + op[1] % (len(table) - 1)]
    sep = draw(st.sampled_from(SEPARATORS[:1] * 9 + SEPARATORS[1:]))
    quote = draw(st.booleans())
    cells = [[f'"{c}"' if quote else c for c in r] for r in table]
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(sep.join(r) for r in cells)
    for op in draw(st.lists(_text_edit, max_size=2)):
        at = op[1] % (len(text) + 1)
        text = text[:at] + op[2] + text[at:] if op[0] == "insert" else text[:at] + text[at + op[2]:]
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:  # gzip, sometimes with a damaged byte
        data = gzip.compress(data, mtime=0)
        flip = draw(st.none() | st.integers(0, len(data) - 1))
        if flip is not None:
            data = data[:flip] + bytes([data[flip] ^ 0x5A]) + data[flip + 1:]
        return "train.csv.gz", data
    return "train.csv", data


def _read_or_refuse(folder, name: str, data: bytes) -> None:
    """read_labels returns a validated frame or raises LabelFileError / MissingFileError."""
    path = folder / name
    path.write_bytes(data)
    try:
        df = read_labels(path)
    except (LabelFileError, MissingFileError) as err:
        assert str(path) in str(err), str(err)  # every refusal names the file
        return
    finally:
        assert path.read_bytes() == data  # never modified
        path.unlink()
    assert len(df) >= 1 and df.columns.is_unique and set(REQUIRED_COLUMNS) <= set(df.columns)
    values = df[list(OBSERVATIONS)].to_numpy()
    assert values.dtype == np.float64
    assert np.isin(values[~np.isnan(values)], [1.0, 0.0, -1.0]).all()
    assert df["Age"].dtype == np.int64 and df["Age"].between(0, 130).all()
    assert df["Path"].is_unique
    for value in df["Path"]:
        match = PATH_PATTERN.fullmatch(value)
        assert match, value
        resolved = resolve_image_path(folder, value)  # the file the row names, inside the root
        assert resolved == folder.joinpath(*value.split("/")[1:])
        assert resolved.parts[len(folder.parts)] == match["split"]


FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=600), gz=st.booleans())
def test_fuzz_read_labels_arbitrary_bytes(fuzz_dir, data, gz):
    _read_or_refuse(fuzz_dir, "train.csv.gz" if gz else "train.csv", data)


@FUZZ
@given(text=st.text(max_size=400))
@example(text=",".join(HEADER) + "\n" + ",".join(HEADER) + "\n")
def test_fuzz_read_labels_arbitrary_text(fuzz_dir, text):
    _read_or_refuse(fuzz_dir, "train.csv", text.encode("utf-8", "surrogatepass"))


def _with(cells: dict[int, tuple[int, str]] | None = None, extra: str | None = None) -> tuple:
    """A valid 3-row CSV as (name, bytes), with cells replaced and an extra column appended."""
    table = [list(HEADER)] + [_csv_row(r) for r in range(3)]
    for r, (c, v) in (cells or {}).items():
        table[1 + r][c] = v
    if extra is not None:
        table = [row + [extra if i == 0 else row[HEADER.index(extra)]] for i, row in
                 enumerate(table)]
    text = "\n".join(",".join(r) for r in table) + "\n"
    return ("train.csv", text.encode())


@FUZZ
@given(case=mutated_csv())
@example(case=_with({1: (0, "./train/patient00009/study1/view1_frontal.jpg")}))
@example(case=_with({1: (0, "../train/patient00009/study1/view1_frontal.jpg")}))
@example(case=_with(extra="Path"))
@example(case=_with(extra="No Finding"))
@example(case=_with({0: (2, "18446744073709551616"), 1: (2, "5")}))
@example(case=_with({2: (0, "x/valid/patient7/study2/view3_lateral.jpg\n")}))
@example(case=("train.csv.gz", gzip.compress(_with()[1], mtime=0)[:-30] + b"\x00" * 30))
def test_fuzz_read_labels_mutated_valid_csv(fuzz_dir, case):
    _read_or_refuse(fuzz_dir, *case)


def test_fuzz_mutations_reach_both_outcomes(fuzz_dir):
    """The mutated-CSV strategy is not vacuous: some examples read fine, some are refused."""
    outcomes = {"ok": 0, "refused": 0}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None)
    @given(case=mutated_csv())
    def probe(case):
        name, data = case
        path = fuzz_dir / f"probe-{name}"
        path.write_bytes(data)
        try:
            read_labels(path)
            outcomes["ok"] += 1
        except (LabelFileError, MissingFileError):
            outcomes["refused"] += 1
        finally:
            path.unlink()

    probe()
    assert outcomes["ok"] >= 10 and outcomes["refused"] >= 10, outcomes
