"""chexlib.session: path resolution, data preparation and the per-notebook set-up."""

import os
from pathlib import Path

import numpy as np
import pytest

from chexlib import params as P
from chexlib.errors import MissingFileError, ParameterError
from chexlib.session import ensure_data, project_root, resolve_path, start


def test_project_root_is_found_from_a_subfolder(tmp_path, monkeypatch):
    monkeypatch.delenv("CHEXLIB_ROOT", raising=False)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    assert project_root(tmp_path / "notebooks") == tmp_path.resolve()
    monkeypatch.setenv("CHEXLIB_ROOT", str(tmp_path / "elsewhere"))
    assert project_root(tmp_path / "notebooks") == (tmp_path / "elsewhere").resolve()


def test_resolve_path(tmp_path):
    assert resolve_path("data/x", tmp_path) == tmp_path / "data/x"
    assert resolve_path(str(tmp_path / "abs"), Path("/nowhere")) == tmp_path / "abs"


def test_missing_chexpert_folder_says_how_to_get_the_data(tmp_path):
    params = P.validate({"dataset": "chexpert"})
    with pytest.raises(MissingFileError) as err:
        ensure_data(params, tmp_path / "CheXpert-v1.0-small")
    msg = str(err.value)
    assert "train.csv does not exist" in msg and "register" in msg and "CheXpert-v1.0-small" in msg


def test_phantom_is_regenerated_when_its_parameters_change_but_a_foreign_folder_is_kept(tmp_path):
    small = P.validate({"phantom_n_train": 10, "phantom_n_valid": 10})
    root = tmp_path / "phantom"
    ensure_data(small, root)
    assert len((root / "train.csv").read_text().splitlines()) == 11
    ensure_data({**small, "phantom_n_train": 12}, root)  # same folder, other parameters
    assert len((root / "train.csv").read_text().splitlines()) == 13
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "train.csv").write_text("precious")
    with pytest.raises(ParameterError, match="not empty"):
        ensure_data(small, foreign)
    assert (foreign / "train.csv").read_text() == "precious"


def test_start_prepares_the_run_folder_and_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXLIB_ROOT", str(tmp_path))
    (tmp_path / "data").mkdir()
    for name in ("train.csv", "valid.csv"):
        (tmp_path / "data" / name).write_text("Path\n")
    values = {**P.defaults(), "dataset": "chexpert", "data_root": "data", "run_dir": "runs/x",
              "seed": 3}
    session = start(values)
    assert session.run_dir == tmp_path / "runs/x" and session.figures_dir.is_dir()
    assert session.cache_dir == tmp_path / "data" / ".cache"
    first = np.random.rand()
    start(values)
    assert np.random.rand() == first  # seeded again: the same draw
    import pandas as pd

    path = session.save_table(pd.DataFrame({"a": [1]}), "t")
    assert path.read_text().startswith(",a") and oct(os.stat(path).st_mode)[-3:] != "600"
    saved = session.save_images([np.full((4, 3), 7, np.uint8)], ["img"], "examples")
    from PIL import Image

    assert np.array(Image.open(saved[0])).tolist() == [[7] * 3] * 4
    with pytest.raises(ParameterError, match="'epochs'"):
        start({**values, "epochs": 0})
