"""Lean notebooks: each parameters cell declares the names its notebook reads, nothing else.

The runner passes a notebook only those names; the rest come from the run folder's params.yaml
(chexlib.session). These tests read the committed notebooks with ``ast``: a name of the schema used
in a notebook must be declared there, no other cell may assign one (collect() would pick it up when
the setup cell runs again), and every name of the schema is read by some notebook.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from chexlib import params as P
from chexlib.runner import declared_parameters, parameter_readers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_cells(path: Path) -> tuple[str, list[str]]:
    """The parameters cell's source and every other code cell's source."""
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    params = [c.source for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, path.name
    return params[0], [c.source for c in cells if "parameters" not in c.metadata.get("tags", [])]


def _names(source: str, context: type) -> set[str]:
    return {node.id for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, context)}


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_is_valid_with_unique_cell_ids(notebook):
    # nbformat 4.5 requires a cell id; without one it warns now and will refuse later.
    raw = json.loads(notebook.read_text())  # as committed (nbformat's reader fills in ids)
    ids = [cell.get("id") for cell in raw["cells"]]
    assert None not in ids, f"{notebook.name}: cells {[i for i, x in enumerate(ids) if x is None]}"
    assert len(set(ids)) == len(ids), f"{notebook.name}: repeated cell ids"
    nbformat.validate(nbformat.from_dict(raw))
    assert not any(cell.get("outputs") for cell in raw["cells"]), f"{notebook.name} has outputs"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_declares_schema_names_with_their_defaults(notebook):
    declared = papermill.inspect_notebook(str(notebook))  # papermill's own reading of the cell
    assert "run_dir" in declared and set(declared) <= set(P.SCHEMA)
    values = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}
    defaults = P.defaults()
    assert values == {k: defaults[k] for k in values}
    assert declared_parameters(notebook) == values


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_every_schema_name_a_notebook_uses_is_declared_and_none_is_reassigned(notebook):
    params_cell, others = _code_cells(notebook)
    declared = set(declared_parameters(notebook))
    used = set().union(*(_names(src, ast.Load) for src in others)) & set(P.SCHEMA)
    assigned = set().union(*(_names(src, ast.Store) for src in others)) & set(P.SCHEMA)
    assert used <= declared, f"used but not declared: {sorted(used - declared)}"
    assert not assigned, f"assigned outside the parameters cell: {sorted(assigned)}"
    assert len(declared) < len(P.SCHEMA)  # lean: not the whole schema


def test_every_schema_name_is_read_by_some_notebook():
    readers = parameter_readers(ROOT / "notebooks")
    assert set(readers) == set(P.SCHEMA)
    assert [name for name, notebooks in readers.items() if not notebooks] == []
    assert readers["run_dir"] == [p.name[:2] for p in NOTEBOOKS]  # every notebook needs its run


def test_cli_lists_every_parameter_with_the_notebooks_that_read_it():
    proc = subprocess.run([sys.executable, "-m", "chexlib", "params"], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    header, *rows = proc.stdout.splitlines()
    assert header.split()[:3] == ["name", "type", "notebooks"]
    listed = {row.split()[0]: row.split()[2] for row in rows}
    readers = parameter_readers(ROOT / "notebooks")
    assert listed == {name: ",".join(notebooks) for name, notebooks in readers.items()}
    assert listed["n_explain"] == "04,05" and listed["epochs"] == "02"
