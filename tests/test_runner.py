"""The papermill runner: a smoke run of every notebook, failures and timeouts reported clearly."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from chexlib import params as P
from chexlib.errors import ParameterError
from chexlib.methods import DEFAULT_COMPOSITE
from chexlib.run import RunFolder
from chexlib.runner import NotebookFailed, install_kernel, notebook_paths, run_series

ROOT = Path(__file__).resolve().parents[1]


def _fake_chexpert(folder: Path) -> Path:
    """A folder that satisfies ensure_data for dataset=chexpert (the tests below read no data)."""
    folder.mkdir(parents=True)
    for name in ("train.csv", "valid.csv"):
        (folder / name).write_text("Path\n")
    return folder


def _project(tmp_path: Path, cells: list[str]) -> Path:
    """A project folder with one notebook: the parameters cell, then ``cells``."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    params = "\n".join(f"{k} = {v!r}" for k, v in P.defaults().items())
    nb = nbformat.v4.new_notebook()
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [first] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "01_test.ipynb")
    return root


def _params(tmp_path: Path, **over) -> dict:
    values = {"dataset": "chexpert", "data_root": str(_fake_chexpert(tmp_path / "data")),
              "run_dir": str(tmp_path / "run"), **over}
    return P.validate(values)


@pytest.mark.slow
def test_failing_cell_names_notebook_and_cell_and_keeps_partial_output(tmp_path):
    root = _project(tmp_path, ["x = 1", "raise ValueError('broken on purpose')", "y = 2"])
    with pytest.raises(NotebookFailed) as err:
        run_series(_params(tmp_path), root=root, log_output=False, echo=lambda s: None)
    msg = str(err.value)
    assert "01_test.ipynb failed in the cell with execution count" in msg
    assert "(`raise ValueError('broken on purpose')`)" in msg
    assert "ValueError: broken on purpose" in msg
    partial = RunFolder(tmp_path / "run").notebook("01_test.ipynb")
    assert str(partial) in msg and partial.is_file()
    executed = nbformat.read(partial, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors and errors[0]["ename"] == "ValueError"


@pytest.mark.slow
def test_cell_timeout_stops_the_run(tmp_path):
    root = _project(tmp_path, ["import time; time.sleep(60)"])
    with pytest.raises(NotebookFailed, match=re.compile("01_test.ipynb stopped.*Cell timeout: 3 s", re.S)):
        run_series(_params(tmp_path), root=root, cell_timeout=3, log_output=False,
                   echo=lambda s: None)


@pytest.mark.slow
def test_injected_parameters_reach_the_notebook(tmp_path):
    root = _project(tmp_path, ["import json, pathlib\n"
                               "pathlib.Path(run_dir, 'seen.json').write_text("
                               "json.dumps({'epochs': epochs, 'lr': lr}))"])
    params = _params(tmp_path, epochs=7, lr=0.5)
    result = run_series(params, root=root, log_output=False, echo=lambda s: None)
    seen = json.loads((result.run_dir / "seen.json").read_text())
    assert seen == {"epochs": 7, "lr": 0.5}
    saved = RunFolder(result.run_dir).read_params()
    assert saved["epochs"] == 7 and Path(saved["data_root"]).is_absolute()


def _one_cell_notebook(root: Path, source: str) -> None:
    (root / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, root / "notebooks" / "01_x.ipynb")


def test_notebook_declaring_an_unknown_name_or_no_run_dir_is_refused(tmp_path):
    params = _params(tmp_path)
    _one_cell_notebook(tmp_path / "a", "run_dir = 'runs/default'\nepoch = 3")
    with pytest.raises(ParameterError, match=r"01_x.ipynb: the parameters cell.*\['epoch'\]"):
        run_series(params, root=tmp_path / "a", echo=lambda s: None)
    _one_cell_notebook(tmp_path / "b", "epochs = 3")
    with pytest.raises(ParameterError, match="01_x.ipynb: the parameters cell.*run_dir is missing"):
        run_series(params, root=tmp_path / "b", echo=lambda s: None)
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


@pytest.mark.slow
def test_a_notebook_gets_only_its_own_names_and_reads_the_rest_from_params_yaml(tmp_path):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("run_dir = 'runs/default'\nepochs = 4")
    cell.metadata["tags"] = ["parameters"]
    probe = ("import json, pathlib\n"
             "from chexlib.params import collect\n"
             "from chexlib.session import start\n"
             "session = start(collect(globals()))\n"
             "pathlib.Path(run_dir, 'seen.json').write_text(json.dumps({\n"
             "    'lr_defined': 'lr' in globals(), 'epochs': epochs,\n"
             "    'session_lr': session.params['lr'], 'session_epochs': session.params['epochs']}))")
    nb.cells = [cell, nbformat.v4.new_code_cell(probe)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "01_x.ipynb")
    result = run_series(_params(tmp_path, epochs=7, lr=0.5), root=root, log_output=False,
                        echo=lambda s: None)
    seen = json.loads((result.run_dir / "seen.json").read_text())
    assert seen == {"lr_defined": False, "epochs": 7, "session_lr": 0.5, "session_epochs": 7}
    injected = nbformat.read(result.run_dir / "notebooks" / "01_x.ipynb", as_version=4)
    assert set(injected.metadata["papermill"]["parameters"]) == {"run_dir", "epochs"}


def test_notebook_selection(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name in ("02_b.ipynb", "01_a.ipynb", "notes.ipynb", "10_c.ipynb"):
        (folder / name).write_text("{}")
    assert [p.name for p in notebook_paths(folder)] == ["01_a.ipynb", "02_b.ipynb", "10_c.ipynb"]
    assert [p.name for p in notebook_paths(folder, ["02"])] == ["02_b.ipynb"]
    with pytest.raises(ParameterError, match="matches none of"):
        notebook_paths(folder, ["07"])


@pytest.mark.slow
def test_smoke_run_of_every_notebook(tmp_path):
    """The README's run command with the smoke preset, through the CLI, into a temporary folder."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "chexlib", "run", "--preset", "smoke", "--quiet",
           "-p", "run_dir", str(run), "-p", "data_root", str(tmp_path / "phantom")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = [p.name for p in notebook_paths(ROOT / "notebooks")]
    executed = sorted(p.name for p in (run / "notebooks").glob("*.ipynb"))
    assert executed == expected
    for name in executed:
        nb = nbformat.read(RunFolder(run).notebook(name), as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        assert nb.metadata["papermill"]["parameters"]["run_dir"] == str(run)
    figures = {p.name for p in (run / "figures").glob("*.png")}
    assert {"01_label_distribution.png", "01_example_gallery.png"} <= figures
    assert len(list((run / "figures" / "01_examples").glob("*.png"))) == P.load_preset("smoke")["n_examples"]
    assert {"04_lrp_composites.png", "05_gradcam_layers.png"} <= figures
    for name in ("04_lrp.ipynb", "05_gradcam.ipynb"):  # the browser's last picture is kept
        nb = nbformat.read(RunFolder(run).notebook(name), as_version=4)
        state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
        images = [m for m in state.values() if m["model_name"] == "ImageModel"]
        assert len(images) == 1 and images[0]["buffers"][0]["path"] == ["value"], name
        assert len(images[0]["buffers"][0]["data"]) > 1000, name
    maps = {p.parent.name for p in RunFolder(run).maps_dir.glob("*/index.json")}
    assert {DEFAULT_COMPOSITE, "gradcam"} <= maps
    # Notebook 07 (the smoke phantom has drains): its three tables with the documented columns.
    shortcut_tables = {
        "07_strata": ["observation", "subgroup", "n", "auroc", "auroc_low", "auroc_high"],
        "07_causal": ["observation", "subgroup", "n", "logit_change_mean", "low", "high"],
        "07_reveal": ["method", "share_confounder", "share_finding", "spearman_with_effect"]}
    for name, columns in shortcut_tables.items():
        table = pd.read_csv(RunFolder(run).table(name))
        assert set(columns) <= set(table.columns) and len(table) > 0, name
    assert "07_with_and_without_drain.png" in figures
    _notebook_03_opened_by_hand(RunFolder(run), tmp_path)


def _notebook_03_opened_by_hand(run: RunFolder, tmp_path: Path) -> None:
    """Notebook 03 run alone, as from JupyterLab (working directory notebooks/, no runner): only
    run_dir is changed in its cell; image size, data and policy come from the smoke run's
    params.yaml (the defaults, 128 px, would not fit the 64 px checkpoint)."""
    import papermill

    series = run.read_params()
    before = {path: path.read_bytes() for path in (run.predictions, run.metrics, run.outcomes)}
    for path in before:
        path.unlink()
    saved = os.environ.get("JUPYTER_PATH")
    try:
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_evaluation.ipynb"),
                                   str(tmp_path / "03_by_hand.ipynb"),
                                   parameters={"run_dir": str(run.path)},
                                   cwd=str(ROOT / "notebooks"),
                                   kernel_name=install_kernel(tmp_path / "jupyter"),
                                   progress_bar=False, execution_timeout=600)
    finally:  # install_kernel put its folder first on JUPYTER_PATH
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved
    assert {path: path.read_bytes() for path in before} == before
    assert run.read_params() == series  # its own names have the smoke run's values: same record


@pytest.mark.slow
def test_run_series_leaves_the_callers_environment_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("CHEXLIB_ROOT", raising=False)
    monkeypatch.delenv("CHEXLIB_PROGRESS", raising=False)
    monkeypatch.setenv("JUPYTER_PATH", "/somewhere")
    root = _project(tmp_path, ["x = 1"])
    run_series(_params(tmp_path), root=root, log_output=False, echo=lambda s: None)
    assert "CHEXLIB_ROOT" not in os.environ
    assert os.environ["JUPYTER_PATH"] == "/somewhere"
    assert "CHEXLIB_PROGRESS" not in os.environ
