"""Read and validate CheXpert-format label files.

A CheXpert CSV has the columns ``Path, Sex, Age, Frontal/Lateral, AP/PA`` followed by the 14
observations (:data:`chexlib.observations.OBSERVATIONS`). Label cells are ``1.0``, ``0.0``,
``-1.0`` (uncertain) or empty (not mentioned). :func:`read_labels` checks all of that and stops
with an error naming the file, the line and what was expected: nothing is silently dropped.

What works and what stops:

* Extra columns (anywhere in the header) are kept as they are, as text; a UTF-8 byte-order mark
  and Windows (``\r\n``) or old Mac (``\r``) line endings are accepted; blank lines are skipped;
  spaces around cells are stripped. ``.csv.gz`` files are read through gzip.
* A semicolon-, tab- or pipe-separated file stops with a message saying which delimiter it
  seems to use and that a comma-separated file is expected.
* A column name that appears twice in the header stops (which one would be meant is unknowable).
* Bytes that are not UTF-8, a damaged gzip stream, a NUL byte or a ragged row stop with the
  file (and line) named. :func:`read_labels` raises only :class:`~chexlib.errors.LabelFileError`
  and :class:`~chexlib.errors.MissingFileError`; a property-based test feeds it arbitrary bytes
  and mutated files to keep it so.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import importlib.resources
import os
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from chexlib.errors import LabelFileError, MissingFileError
from chexlib.observations import META_COLUMNS, OBSERVATIONS

#: ``<dataset folder>/<split>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg``. The dataset
#: folder may be any name except ``.`` and ``..`` (which would resolve to another file: the
#: first component is replaced by the data root); ``\Z``, not ``$``, so no trailing newline.
PATH_PATTERN = re.compile(
    r"^(?P<dataset>(?!\.\.?/)[^/\\]+)/(?P<split>train|valid|test)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+)/view\d+_(?P<view>frontal|lateral)\.jpg\Z"
)
REQUIRED_COLUMNS: tuple[str, ...] = META_COLUMNS + OBSERVATIONS
_LABEL_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": np.nan}
#: Delimiters people export by mistake (Excel in many locales writes ';'), with their names.
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CheXpert-format CSV and validate every row.

    Parameters
    ----------
    path : str or path-like
        ``train.csv`` or ``valid.csv`` of a CheXpert-format folder (``.csv`` or ``.csv.gz``).

    Returns
    -------
    DataFrame
        One row per image in file order, with the columns of the file. The 14 label columns are
        float64 with values 1.0, 0.0, -1.0 and NaN (blank); ``Age`` is an integer. The attribute
        ``df.attrs["source"]`` holds the file path.

    Raises
    ------
    MissingFileError
        If the file does not exist.
    LabelFileError
        If the file is empty or not UTF-8 text, is not comma-separated, a required column is
        missing or misspelled, a column name appears twice, a label is not one of 1, 0, -1 or
        blank, an ``Age`` is not a number, a ``Path`` does not fit the CheXpert pattern, or the
        same ``Path`` appears twice. The message names the file and the line (and column).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"label file {path} does not exist")
    header, rows, lines = _read_cells(path)
    df = pd.DataFrame(rows, columns=header, dtype=str)
    _check_columns(df, path)
    if len(df) == 0:
        raise LabelFileError(f"{path}: the file has a header but no rows; expected one row per image")
    df = df.apply(lambda col: col.str.strip())
    df.attrs["lines"] = lines
    _check_paths(df, path)
    labels = _parse_labels(df, path)
    age = _parse_age(df, path)
    out = df.copy()
    out[list(OBSERVATIONS)] = labels
    out["Age"] = age
    out.attrs = {"source": str(path)}
    return out


def _read_cells(path: Path) -> tuple[list[str], list[list[str]], np.ndarray]:
    """Header, rows of cells and the file line of each row; ragged rows are an error.

    The csv module (not pandas) reads the file so that a row with too few or too many cells is
    caught with its line number instead of being padded with blanks or shifted into an index.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or not any(c.strip() for c in header):
                raise LabelFileError(f"{path}: the file is empty; expected a CheXpert header and rows")
            header = [c.strip() for c in header]
            if len(header) == 1 and (name := _other_delimiter(header, len(REQUIRED_COLUMNS))):
                raise LabelFileError(
                    f"{path}, line 1: the header is a single column that looks {name}-separated "
                    f"({header[0][:60]!r}...); expected a comma-separated CSV"
                )
            rows, lines = [], []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    name = _other_delimiter(row, len(header)) if len(row) < len(header) else None
                    hint = f"; the line looks {name}-separated, expected comma-separated"
                    hint = hint if name else ""
                    raise LabelFileError(
                        f"{path}, line {reader.line_num}: {len(row)} cells, expected "
                        f"{len(header)} as in the header{hint}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error, OSError, EOFError, zlib.error) as err:
        # OSError includes gzip.BadGzipFile; zlib.error is a damaged compressed stream.
        raise LabelFileError(f"{path}: not a readable UTF-8 CSV file ({err})") from err
    return header, rows, np.asarray(lines, dtype=np.int64)


def _other_delimiter(cells: list[str], n_columns: int) -> str | None:
    """Name of the non-comma delimiter that ``cells`` (a row read as comma-separated) seems to
    use, or None: the most frequent of ``; tab |`` if it occurs at least half as often as the
    row should have separators."""
    counts = {d: sum(c.count(d) for c in cells) for d in _OTHER_DELIMITERS}
    best = max(counts, key=counts.get)
    return _OTHER_DELIMITERS[best] if counts[best] >= max(1, (n_columns - 1) // 2) else None


def _line(df: pd.DataFrame, row: int) -> int:
    """File line number (1-based, the header is line 1) of a 0-based data row."""
    return int(df.attrs["lines"][row])


def _check_columns(df: pd.DataFrame, path: Path) -> None:
    names = [str(c) for c in df.columns]
    repeated = sorted({c for c in names if names.count(c) > 1}, key=names.index)
    if repeated:
        where = [i + 1 for i, c in enumerate(names) if c == repeated[0]]
        raise LabelFileError(
            f"{path}, line 1: column {repeated[0]!r} appears {len(where)} times in the header "
            f"(columns {', '.join(map(str, where))}); expected each column name once"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, [str(c) for c in df.columns], n=1, cutoff=0.75)
        hints.append(f"{name!r} (found {close[0]!r}?)" if close else repr(name))
    detail = ""
    if len(df.columns) == 1:
        detail = " The header has a single column: is the file comma-separated?"
    raise LabelFileError(
        f"{path}: missing or misspelled column(s) {', '.join(hints)}; expected the CheXpert "
        f"columns {', '.join(REQUIRED_COLUMNS)}.{detail}"
    )


def _check_paths(df: pd.DataFrame, path: Path) -> None:
    paths = df["Path"]
    fits = paths.str.fullmatch(PATH_PATTERN.pattern)
    if not fits.all():
        row = int(np.flatnonzero(~fits.to_numpy())[0])
        raise LabelFileError(
            f"{path}, line {_line(df, row)}: Path {paths.iloc[row]!r} does not fit the CheXpert pattern "
            "'<dataset>/<train|valid|test>/patientNNNNN/studyN/viewN_<frontal|lateral>.jpg'"
        )
    dup = paths.duplicated(keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())
        first = paths.iloc[rows[0]]
        lines = [_line(df, r) for r in rows if paths.iloc[r] == first]
        raise LabelFileError(
            f"{path}: duplicate image path {first!r} on lines {', '.join(map(str, lines))} "
            f"({dup.sum()} rows share a path); expected each image once"
        )


def _parse_labels(df: pd.DataFrame, path: Path) -> np.ndarray:
    out = np.empty((len(df), len(OBSERVATIONS)), dtype=np.float64)
    for j, name in enumerate(OBSERVATIONS):
        cells = df[name]
        valid = cells.isin(list(_LABEL_VALUES))
        if not valid.all():
            row = int(np.flatnonzero(~valid.to_numpy())[0])
            raise LabelFileError(
                f"{path}, line {_line(df, row)}, column {name!r}: label {cells.iloc[row]!r} is not "
                "allowed; expected 1.0, 0.0, -1.0 or blank"
            )
        out[:, j] = cells.map(_LABEL_VALUES).to_numpy(dtype=np.float64)
    return out


def _parse_age(df: pd.DataFrame, path: Path) -> np.ndarray:
    age = pd.to_numeric(df["Age"], errors="coerce")
    bad = age.isna() | (age < 0) | (age > 130) | (age % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise LabelFileError(
            f"{path}, line {_line(df, row)}, column 'Age': {df['Age'].iloc[row]!r} is not an age; "
            "expected a whole number of years between 0 and 130"
        )
    return age.to_numpy().astype(np.int64)


def patient_ids(df: pd.DataFrame) -> pd.Series:
    """Patient identifier of each row, taken from its ``Path`` (e.g. ``"patient00001"``)."""
    return df["Path"].str.extract(PATH_PATTERN.pattern)["patient"]


def study_ids(df: pd.DataFrame) -> pd.Series:
    """Study identifier of each row, ``"patientNNNNN/studyN"``, taken from its ``Path``."""
    parts = df["Path"].str.extract(PATH_PATTERN.pattern)
    return parts["patient"] + "/" + parts["study"]


def torchxrayvision_file(name: str, purpose: str) -> Path:
    """Path of a data file that the installed torchxrayvision package ships (never copied).

    Parameters
    ----------
    name : str
        File name inside ``torchxrayvision/data/``.
    purpose : str
        What chexlib needs it for, for the error message (e.g. "CheXpert's train.csv").

    Raises
    ------
    MissingFileError
        If torchxrayvision is not installed or does not ship the file.
    """
    try:
        root = importlib.resources.files("torchxrayvision")
    except ModuleNotFoundError as err:
        raise MissingFileError(
            f"{purpose} comes from the torchxrayvision package, which is not installed: "
            "run `pip install torchxrayvision`"
        ) from err
    path = Path(str(root / "data" / name))
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist: this torchxrayvision version does not ship {purpose}; "
            "install torchxrayvision>=1.2"
        )
    return path


def chexpert_train_labels_path() -> Path:
    """Path of the real CheXpert ``train.csv`` shipped inside the installed torchxrayvision."""
    return torchxrayvision_file("chexpert_train.csv.gz", "the real CheXpert train.csv")


def chexpert_train_labels() -> pd.DataFrame:
    """Load the real CheXpert ``train.csv`` (223,414 rows) that torchxrayvision ships.

    It is read through :func:`read_labels`, so it is validated like any other label file. The
    file stays inside the installed package: chexlib never copies it.

    Returns
    -------
    DataFrame
        As :func:`read_labels`.
    """
    return read_labels(chexpert_train_labels_path())


def label_distribution(df: pd.DataFrame) -> pd.DataFrame:
    """Count positive, negative, uncertain and blank labels per observation.

    Parameters
    ----------
    df : DataFrame
        Labels as returned by :func:`read_labels`.

    Returns
    -------
    DataFrame
        Indexed by the 14 observation names in CSV order, with integer columns ``positive``,
        ``negative``, ``uncertain``, ``blank`` and float columns ``positive_%``,
        ``negative_%``, ``uncertain_%``, ``blank_%`` (percent of all rows).
    """
    missing = [c for c in OBSERVATIONS if c not in df.columns]
    if missing:
        raise ValueError(f"label_distribution: missing observation column(s) {missing}")
    values = df[list(OBSERVATIONS)].to_numpy(dtype=np.float64)
    counts = {
        "positive": (values == 1.0).sum(axis=0),
        "negative": (values == 0.0).sum(axis=0),
        "uncertain": (values == -1.0).sum(axis=0),
        "blank": np.isnan(values).sum(axis=0),
    }
    out = pd.DataFrame({k: v.astype(np.int64) for k, v in counts.items()}, index=list(OBSERVATIONS))
    out.index.name = "observation"
    n = max(len(df), 1)
    for k in counts:
        out[f"{k}_%"] = 100.0 * out[k] / n
    return out
