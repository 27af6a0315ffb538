"""chexlib.run.RunFolder: the documented layout of a run folder, and its params.yaml record.

The names below are the contract the README documents (``What a run produces``); every module and
test takes them from RunFolder, so this is the one place they are written out in the tests.
"""

from pathlib import Path

import pytest

from chexlib.errors import ParameterError
from chexlib.run import RunFolder


def test_every_file_of_a_run_has_its_documented_name(tmp_path):
    run = RunFolder(tmp_path / "runs" / "x")
    base = tmp_path / "runs" / "x"
    assert run.path == base and Path(run) == base
    expected = {
        "params": "params.yaml", "checkpoint": "checkpoint.pt",
        "last_checkpoint": "checkpoint_last.pt", "history": "history.csv",
        "train_log": "train.log", "train_result": "train_result.json",
        "predictions": "predictions.csv", "thresholds": "thresholds.json",
        "outcomes": "outcomes.csv", "metrics": "metrics.json", "lock": ".chexlib-run.lock",
        "notebooks_dir": "notebooks", "figures_dir": "figures", "tables_dir": "tables",
        "maps_dir": "maps", "jupyter_dir": ".jupyter",
    }
    assert {name: getattr(run, name) for name in expected} == {
        name: base / file for name, file in expected.items()}
    assert run.figure("04_all_classes") == base / "figures" / "04_all_classes.png"
    assert run.table("06_sanity") == base / "tables" / "06_sanity.csv"
    assert run.notebook("04_lrp.ipynb") == base / "notebooks" / "04_lrp.ipynb"
    assert run.maps("gradcam") == base / "maps" / "gradcam"
    assert not base.exists()  # naming a path creates nothing


def test_params_yaml_round_trips_and_a_bad_one_is_named(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_params() == {}  # no record yet
    values = {"epochs": 3, "lr": 1e-4, "classes_to_show": ["Edema"], "run_dir": str(tmp_path)}
    run.write_params(values)
    assert run.read_params() == values
    assert list(run.read_params()) == list(values)  # the order given is kept
    run.params.write_text("epochs: [unclosed\n")
    with pytest.raises(ParameterError, match=r"params.yaml: not valid YAML"):
        run.read_params()
