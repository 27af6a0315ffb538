"""chexlib.data.labels: read_labels on good and bad files, and the real train.csv's statistics."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from chexlib.data.labels import label_distribution, read_labels
from chexlib.errors import LabelFileError, MissingFileError
from chexlib.observations import OBSERVATIONS

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]


def _row(patient: int, view: int = 1, labels=None, age="50", path=None) -> list[str]:
    labels = labels if labels is not None else ["1.0", "0.0", "-1.0", ""] + [""] * 10
    path = path or f"CheXpert-v1.0-small/train/patient{patient:05d}/study1/view{view}_frontal.jpg"
    return [path, "Male", age, "Frontal", "PA", *labels]


def _write(
    tmp_path, rows, header=HEADER, sep=",", newline="\n", encoding="utf-8", name="train.csv"
):
    path = tmp_path / name
    text = newline.join([sep.join(header)] + [sep.join(r) for r in rows]) + newline
    path.write_bytes(text.encode(encoding))
    return path


def _error(path) -> str:
    with pytest.raises(LabelFileError) as info:
        read_labels(path)
    return str(info.value)


def test_good_file(tmp_path):
    rows = [_row(1), _row(2, labels=["1", "0", "-1"] + [""] * 11, age="7")]
    df = read_labels(_write(tmp_path, rows))
    assert list(df.columns) == HEADER and len(df) == 2
    assert df.attrs["source"] == str(tmp_path / "train.csv")
    values = df[list(OBSERVATIONS)].to_numpy()
    assert values.dtype == np.float64
    for r in range(2):
        np.testing.assert_array_equal(values[r, :3], [1.0, 0.0, -1.0])
        assert np.isnan(values[r, 3:]).all()
    assert df["Age"].tolist() == [50, 7] and df["Age"].dtype == np.int64


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="nope.csv"):
        read_labels(tmp_path / "nope.csv")


def test_missing_column(tmp_path):
    header = [c for c in HEADER if c != "Edema"]
    rows = [[v for c, v in zip(HEADER, _row(1)) if c != "Edema"]]
    text = _error(_write(tmp_path, rows, header=header))
    assert str(tmp_path / "train.csv") in text and "'Edema'" in text and "missing" in text


def test_misspelled_column_suggests_close_name(tmp_path):
    header = ["Pleural Efusion" if c == "Pleural Effusion" else c for c in HEADER]
    text = _error(_write(tmp_path, [_row(1)], header=header))
    assert "'Pleural Effusion'" in text and "found 'Pleural Efusion'?" in text


def test_bad_label_value_names_file_line_and_column(tmp_path):
    bad = ["1.0", "0.0", "2.0"] + [""] * 11  # column 3 = "Cardiomegaly"
    path = _write(tmp_path, [_row(1), _row(2, labels=bad)])
    text = _error(path)
    assert str(path) in text and "line 3" in text and "'Cardiomegaly'" in text and "'2.0'" in text


def test_empty_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"")
    assert "empty" in _error(path)


def test_header_only(tmp_path):
    assert "no rows" in _error(_write(tmp_path, []))


def test_duplicate_path_names_the_lines(tmp_path):
    path = _write(tmp_path, [_row(1), _row(2), _row(1), _row(3)])
    text = _error(path)
    assert "duplicate" in text and "patient00001" in text and re.search(r"lines 2, 4\b", text)


@pytest.mark.parametrize(
    "bad",
    [
        "train/patient00001/study1/view1_frontal.jpg",  # no dataset folder
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.png",
        "CheXpert-v1.0-small/training/patient00001/study1/view1_frontal.jpg",
        "CheXpert-v1.0-small/train/patient00001/view1_frontal.jpg",
    ],
)
def test_path_not_fitting_the_pattern(tmp_path, bad):
    text = _error(_write(tmp_path, [_row(1), _row(2, path=bad)]))
    assert "line 3" in text and repr(bad) in text and "pattern" in text


@pytest.mark.parametrize("age", ["abc", "", "-3", "200"])
def test_non_numeric_or_impossible_age(tmp_path, age):
    text = _error(_write(tmp_path, [_row(1, age=age)]))
    assert "line 2" in text and "'Age'" in text


def test_utf8_bom_accepted(tmp_path):
    df = read_labels(_write(tmp_path, [_row(1)], encoding="utf-8-sig"))
    assert df.columns[0] == "Path"
    assert df["Path"][0].startswith("CheXpert-v1.0-small/")


def test_windows_line_endings_accepted(tmp_path):
    path = _write(tmp_path, [_row(1), _row(2)], newline="\r\n")
    assert b"\r\n" in path.read_bytes()
    df = read_labels(path)
    assert len(df) == 2 and df.columns[-1] == "Support Devices"
    assert not df["Path"].str.contains("\r").any()
    assert np.isnan(df["Support Devices"]).all()


def test_semicolon_delimiter_gets_clear_message(tmp_path):
    text = _error(_write(tmp_path, [_row(1)], sep=";"))
    assert "comma-separated" in text


# ------------------------------------------------------------------------------------------
# the real CheXpert train.csv
# ------------------------------------------------------------------------------------------

EXPECTED_DISTRIBUTION = """\
No Finding 22381 0 0 201033
Enlarged Cardiomediastinum 10798 21638 12403 178575
Cardiomegaly 27000 11116 8087 177211
Lung Opacity 105581 6599 5598 105636
Lung Lesion 9186 1270 1488 211470
Edema 52246 20726 12984 137458
Consolidation 14783 28097 27742 152792
Pneumonia 6039 2799 18770 195806
Atelectasis 33376 1328 33739 154971
Pneumothorax 19448 56341 3145 144480
Pleural Effusion 86187 35396 11628 90203
Pleural Other 3523 316 2653 216922
Fracture 9040 2512 642 211220
Support Devices 116001 6137 1079 100197"""


def test_real_train_csv_label_distribution():
    pytest.importorskip("torchxrayvision")
    from chexlib.data.labels import chexpert_train_labels

    df = chexpert_train_labels()
    assert len(df) == 223_414
    expected = {}
    for line in EXPECTED_DISTRIBUTION.splitlines():
        *name, pos, neg, unc, blank = line.split()
        expected[" ".join(name)] = [int(pos), int(neg), int(unc), int(blank)]
    table = pd.DataFrame.from_dict(
        expected, orient="index", columns=["positive", "negative", "uncertain", "blank"]
    )
    got = label_distribution(df)
    assert list(got.index) == list(OBSERVATIONS) == list(table.index)
    np.testing.assert_array_equal(
        got[["positive", "negative", "uncertain", "blank"]].to_numpy(), table.to_numpy()
    )
    assert (table.sum(axis=1) == 223_414).all()  # the reference table itself is consistent


def test_fractional_age_is_refused(tmp_path):
    text = _error(_write(tmp_path, [_row(1), _row(2, age="50.5")]))
    assert "line 3" in text and "'Age'" in text and "'50.5'" in text and "whole number" in text


def test_row_with_too_few_cells_is_refused(tmp_path):
    short = _row(2)[:-4]
    text = _error(_write(tmp_path, [_row(1), short]))
    assert "line 3" in text and f"{len(short)} cells, expected {len(HEADER)}" in text


def test_row_with_too_many_cells_is_refused(tmp_path):
    text = _error(_write(tmp_path, [_row(1) + ["extra"], _row(2)]))
    assert "line 2" in text and f"{len(HEADER) + 1} cells, expected {len(HEADER)}" in text


def test_blank_lines_are_skipped_and_later_lines_still_named(tmp_path):
    path = tmp_path / "train.csv"
    good = ",".join(_row(1))
    bad = ",".join(_row(2, labels=["2.0"] + [""] * 13))
    path.write_text(",".join(HEADER) + "\n" + good + "\n\n" + bad + "\n")
    text = _error(path)
    assert "line 4" in text and "'2.0'" in text
