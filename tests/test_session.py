"""chexlib.project and chexlib.session: paths, data, and the per-notebook set-up of a run."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from chexlib import params as P
from chexlib.errors import MissingFileError, ParameterError
from chexlib.checkpoint import weights_fingerprint
from chexlib.project import absolute_paths, ensure_data, project_root, resolve_path
from chexlib.run import RunFolder
from chexlib.session import TrainedRun, open_run, run_parameters, start


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


def _fake_chexpert(root: Path) -> None:
    (root / "data").mkdir()
    for name in ("train.csv", "valid.csv"):
        (root / "data" / name).write_text("Path\n")


def test_a_notebooks_own_names_win_over_params_yaml_which_wins_over_the_defaults(tmp_path):
    run = RunFolder(tmp_path / "runs/x")
    run.path.mkdir(parents=True)
    run.write_params({**P.defaults(), "epochs": 9, "lr": 0.5, "run_dir": str(run.path)})
    params = run_parameters({"run_dir": "runs/x", "epochs": 3}, tmp_path)
    assert params["epochs"] == 3 and params["lr"] == 0.5  # declared; recorded
    assert params["n_explain"] == P.defaults()["n_explain"]  # neither: the default
    assert params["data_root"] == str(tmp_path / "data/phantom")  # made absolute
    assert run_parameters({"run_dir": "runs/none"}, tmp_path) == {
        **absolute_paths(P.defaults(), tmp_path), "run_dir": str(tmp_path / "runs/none")}


def test_a_bad_params_yaml_is_named_and_left_alone(tmp_path):
    run = RunFolder(tmp_path / "runs/x")
    run.path.mkdir(parents=True)
    run.params.write_text("epochs: ten\n")
    with pytest.raises(ParameterError, match=r"params.yaml: parameter 'epochs' = 'ten'"):
        run_parameters({"run_dir": "runs/x"}, tmp_path)
    run.params.write_text("- a list\n")
    with pytest.raises(ParameterError, match=r"params.yaml: expected a mapping"):
        run_parameters({"run_dir": "runs/x"}, tmp_path)
    assert run.params.read_text() == "- a list\n"


def test_start_records_what_a_notebook_opened_by_hand_ran_with(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXLIB_ROOT", str(tmp_path))
    _fake_chexpert(tmp_path)
    values = {"dataset": "chexpert", "data_root": "data", "run_dir": "runs/x"}
    session = start(values)
    recorded = session.run.read_params()
    assert recorded == session.params and recorded["run_dir"] == str(tmp_path / "runs/x")
    before = session.run.params.stat().st_mtime_ns
    start(values)  # the same values: the record is not rewritten
    assert session.run.params.stat().st_mtime_ns == before
    assert start({"run_dir": "runs/x", "n_explain": 5}).run.read_params()["n_explain"] == 5
    assert start({"run_dir": "runs/x"}).params["dataset"] == "chexpert"  # from the record


def test_open_run_of_a_folder_gives_model_reported_images_and_store(tiny_run):
    root, run_dir, probs, _ = tiny_run
    run = open_run(run_dir)
    assert isinstance(run, TrainedRun) and run.device == torch.device("cpu")
    assert not run.model.training and run.params["image_size"] == 48
    assert run.data_root == root.resolve() and len(run.reported) == len(probs)
    np.testing.assert_allclose(run.reported.probs, probs, atol=1e-6)
    assert run.store.model == weights_fingerprint(run.model)
    assert run.store.root == RunFolder(run_dir.resolve()).maps_dir
    with pytest.raises(MissingFileError, match="params.yaml does not exist"):
        open_run(root)
