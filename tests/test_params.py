"""The parameter schema: validation messages, presets, resolution order, notebook cells."""

import subprocess
import sys
from pathlib import Path

import pytest

from chexlib import params as P
from chexlib.errors import MissingFileError, ParameterError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_unknown_parameter_names_the_closest_and_lists_all():
    with pytest.raises(ParameterError) as err:
        P.validate({"epoch": 3})
    msg = str(err.value)
    assert "'epoch'" in msg and "did you mean 'epochs'" in msg
    assert all(name in msg for name in P.SCHEMA)


@pytest.mark.parametrize("name, value, expected", [
    ("epochs", "ten", "not a whole number"),
    ("epochs", 2.5, "not a whole number"),
    ("epochs", True, "not a whole number"),
    ("lr", -1.0, "out of range"),
    ("lr", "fast", "not a number"),
    ("lr", float("nan"), "not a number"),
    ("image_size", 0, "out of range"),
    ("batch_size", -4, "out of range"),
    ("uncertainty_policy", "maybe", "expected one of zeros, ones, ignore"),
    ("device", "tpu", "expected one of auto, cpu, cuda, mps"),
    ("classes_to_show", ["Cardiomegally"], "'Cardiomegally' is not allowed"),
    ("classes_to_show", [], "is empty"),
    ("dataset", "mimic", "expected one of phantom, chexpert"),
    ("lrp_composite", "gradcam", "expected one of epsilon, z, alpha2_beta1"),
    ("composites", ["z", "deep_taylor"],
     "'deep_taylor' is not allowed; expected items from epsilon, z, alpha2_beta1"),
    ("heatmap_scale", "global", "expected one of per_map, shared"),
    ("n_explain", 0, "out of range"),
])
def test_bad_values_name_the_parameter_and_what_is_allowed(name, value, expected):
    with pytest.raises(ParameterError) as err:
        P.validate({name: value}, source="test.yaml")
    assert f"parameter {name!r}" in str(err.value)
    assert "test.yaml" in str(err.value)
    assert expected in str(err.value)


def test_valid_values_are_canonicalised():
    out = P.validate({"epochs": 2.0, "lr": 1, "classes_to_show": "Edema"})
    assert out["epochs"] == 2 and isinstance(out["epochs"], int)
    assert out["lr"] == 1.0 and isinstance(out["lr"], float)
    assert out["classes_to_show"] == ["Edema"]
    assert set(out) == set(P.SCHEMA)


def test_presets_exist_and_are_valid():
    assert {"default", "smoke", "chexpert"} <= set(P.preset_names())
    assert P.load_preset("chexpert")["dataset"] == "chexpert"
    smoke = P.resolve("smoke")
    default = P.resolve("default")
    assert smoke["phantom_n_train"] < default["phantom_n_train"]
    with pytest.raises(ParameterError, match="unknown preset 'fast'.*default"):
        P.load_preset("fast")


def test_resolution_order_preset_then_files_then_overrides(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("epochs: 5\nlr: 0.001\n")
    second = tmp_path / "b.yaml"
    second.write_text("epochs: 7\n")
    out = P.resolve("smoke", files=(first, second), overrides={"lr": 0.01})
    assert out["epochs"] == 7          # the later file wins over the earlier one and the preset
    assert out["lr"] == 0.01           # -p wins over files
    assert out["image_size"] == P.load_preset("smoke")["image_size"]


def test_parameter_file_errors(tmp_path):
    with pytest.raises(MissingFileError, match="nope.yaml"):
        P.load_file(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ParameterError, match="bad.yaml: not valid YAML"):
        P.load_file(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- epochs\n")
    with pytest.raises(ParameterError, match="expected a mapping"):
        P.load_file(listing)
    typo = tmp_path / "typo.yaml"
    typo.write_text("batchsize: 8\n")
    with pytest.raises(ParameterError, match=r"typo.yaml: unknown parameter 'batchsize'.*batch_size"):
        P.load_file(typo)


def test_override_values_parse_as_yaml():
    assert P.parse_override("3") == 3
    assert P.parse_override("1e-3") == 1e-3
    assert P.parse_override("[Edema, Cardiomegaly]") == ["Edema", "Cardiomegaly"]
    assert P.parse_override("ten") == "ten"


def test_notebooks_are_committed_without_outputs():
    import nbformat

    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_cli_rejects_bad_parameters_before_running(tmp_path):
    cmd = [sys.executable, "-m", "chexlib", "run", "-p", "epochs", "ten",
           "-p", "run_dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "parameter 'epochs' = 'ten' is not a whole number" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_lists_parameters():
    proc = subprocess.run([sys.executable, "-m", "chexlib", "params"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    for name in P.SCHEMA:
        assert name in proc.stdout


def test_yaml_scientific_notation_is_a_number(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("lr: 1e-4\n")  # PyYAML reads this as a string
    assert P.resolve("smoke", files=(f,))["lr"] == pytest.approx(1e-4)
