"""Run the notebook series with papermill into one run folder.

``python -m chexlib run --preset default`` validates one parameter set, writes it to the run
folder's ``params.yaml`` (the record of the run, :class:`chexlib.run.RunFolder`), then executes
``notebooks/0N_*.ipynb`` in order into ``notebooks/`` there. Each notebook is passed only the names
its ``parameters`` cell declares (papermill's convention); it reads the rest from ``params.yaml``.

Every cell runs under a timeout (papermill has none by default). A failing notebook stops the
series with a :class:`NotebookFailed` that names the notebook, the cell and the error.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from chexlib.errors import ChexlibError, MissingFileError, ParameterError
from chexlib.files import atomic_write_bytes
from chexlib.params import SCHEMA
from chexlib.progress import PROGRESS_ENV
from chexlib.runlock import run_lock
from chexlib.project import ROOT_ENV, absolute_paths, ensure_data, project_root
from chexlib.run import RunFolder

NOTEBOOK_PATTERN = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
DEFAULT_CELL_TIMEOUT = 3600
#: Figures of the default run that the README shows, copied to ``figures/`` on request.
README_FIGURES = ("01_example_gallery.png", "01_label_distribution.png", "02_learning_curves.png",
                  "03_auroc_comparison.png", "04_lrp_composites.png", "04_conservation.png",
                  "05_lrp_vs_gradcam.png", "06_metric_summary.png")


KERNEL_NAME = "chexlib-python"


def install_kernel(folder: Path) -> str:
    """Make a kernelspec for *this* Python under ``folder`` and put it first on JUPYTER_PATH.

    Papermill looks a kernel up by name, and a ``python3`` kernelspec in the user's or the
    system's Jupyter folders may point at another interpreter without chexlib. A private
    kernelspec for ``sys.executable`` makes the notebooks run in the environment that runs the
    series.
    """
    spec_dir = folder / "kernels" / KERNEL_NAME
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (chexlib)", "language": "python"}
    atomic_write_bytes(spec_dir / "kernel.json", json.dumps(spec, indent=1).encode())
    paths = [str(folder)] + [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    return KERNEL_NAME


class NotebookFailed(ChexlibError, RuntimeError):
    """A notebook of the series raised an error or timed out."""


@dataclass
class SeriesResult:
    """What a run of the series produced."""

    run_dir: Path
    notebooks: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def notebook_paths(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """The series' notebooks (``NN_name.ipynb``) in order; ``only`` selects by prefix or name."""
    if not notebooks_dir.is_dir():
        raise MissingFileError(f"notebook folder {notebooks_dir} does not exist")
    paths = sorted(p for p in notebooks_dir.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if only:
        chosen = [p for p in paths if any(p.name.startswith(o) or p.stem == o for o in only)]
        if len(chosen) == 0:
            raise ParameterError(
                f"--notebooks {','.join(only)} matches none of {', '.join(p.name for p in paths)}"
            )
        paths = chosen
    return paths


def declared_parameters(path: Path) -> dict[str, Any]:
    """Names and literal values assigned in a notebook's ``parameters``-tagged cell."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    declared = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            declared[node.targets[0].id] = ast.literal_eval(node.value)
    return declared


def check_parameters_cell(path: Path) -> None:
    """Refuse a notebook whose ``parameters`` cell declares a name the schema does not have, or
    does not declare ``run_dir`` (every notebook must be pointable at a run folder)."""
    declared = set(declared_parameters(path))
    extra = sorted(declared - set(SCHEMA))
    if extra or "run_dir" not in declared:
        raise ParameterError(
            f"{path}: the parameters cell may declare only names of the parameter schema "
            f"(python -m chexlib params), and must declare run_dir; not in the schema: "
            f"{extra or 'none'}{'' if 'run_dir' in declared else '; run_dir is missing'}"
        )


def parameter_readers(notebooks_dir: Path) -> dict[str, list[str]]:
    """Per parameter name, the notebooks (``01``, ``02`` ...) whose parameters cell declares it."""
    readers: dict[str, list[str]] = {name: [] for name in SCHEMA}
    for path in notebook_paths(notebooks_dir):
        for name in declared_parameters(path):
            readers.setdefault(name, []).append(path.name[:2])
    return readers


def _failed_cell_source(notebook: Path) -> str:
    """First line of the cell that failed, read back from the partially executed notebook."""
    import nbformat

    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except (OSError, ValueError):
        return "?"
    for cell in cells:
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            lines = cell.source.strip().splitlines() or [""]
            return lines[0] if len(lines[0]) <= 80 else lines[0][:77] + "..."
    return "?"


def run_series(
    params: dict[str, Any],
    notebooks: list[str] | None = None,
    cell_timeout: int = DEFAULT_CELL_TIMEOUT,
    root: Path | None = None,
    log_output: bool = True,
    echo: Callable[[str], None] = print,
) -> SeriesResult:
    """Execute the notebooks in order into the run folder.

    Parameters
    ----------
    params : dict
        A resolved, validated parameter set (:func:`chexlib.params.resolve`).
    notebooks : list of str, optional
        Run only these (name or ``NN`` prefix); default all, in order.
    cell_timeout : int
        Seconds one cell may run before the run stops.
    root : Path, optional
        Project folder holding ``notebooks/``; default :func:`chexlib.project.project_root`.

    Raises
    ------
    NotebookFailed
        Naming the notebook, the cell and the error; the partial notebook stays in the run folder.
    """
    root = root or project_root()
    paths = notebook_paths(root / "notebooks", notebooks)
    for p in paths:
        check_parameters_cell(p)
    params = absolute_paths(params, root)
    run = RunFolder(params["run_dir"])
    # One series per run folder: a second one refuses here, before writing anything (runlock).
    with run_lock(run.path, what="python -m chexlib run"):
        run.notebooks_dir.mkdir(parents=True, exist_ok=True)
        run.write_params(params)
        echo(f"run folder: {run.path}")
        ensure_data(params, Path(params["data_root"]))  # generating the phantom shows progress
        saved_env = {k: os.environ.get(k) for k in (ROOT_ENV, "JUPYTER_PATH", PROGRESS_ENV)}
        try:
            return _execute_all(paths, params, run, root, cell_timeout, log_output, echo)
        finally:  # the kernel's environment is the run's, not the caller's from now on
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _execute_all(paths, params, run: RunFolder, root, cell_timeout, log_output,
                 echo) -> SeriesResult:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    os.environ[ROOT_ENV] = str(root)
    os.environ[PROGRESS_ENV] = "text"  # progress bars as text in the papermill log
    kernel = install_kernel(run.jupyter_dir)
    result = SeriesResult(run_dir=run.path)
    for path in paths:
        out = run.notebook(path.name)
        own = {name: params[name] for name in declared_parameters(path)}
        echo(f"executing {path.name} -> {out}")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(path), str(out), parameters=own, kernel_name=kernel, cwd=str(root),
                execution_timeout=cell_timeout, log_output=log_output, progress_bar=False,
            )
        except PapermillExecutionError as err:
            raise NotebookFailed(
                f"{path.name} failed in the cell with execution count {err.exec_count} "
                f"(`{_failed_cell_source(out)}`): {err.ename}: {err.evalue}. "
                f"The partially executed notebook is {out}"
            ) from err
        except Exception as err:  # nbclient's CellTimeoutError, a dead kernel, ...
            raise NotebookFailed(
                f"{path.name} stopped: {type(err).__name__}: {err}. (Cell timeout: "
                f"{cell_timeout} s.) The partially executed notebook is {out}"
            ) from err
        result.seconds[path.name] = time.perf_counter() - start
        result.notebooks.append(out)
        echo(f"  done in {result.seconds[path.name]:.1f} s")
    return result


def copy_readme_figures(run_dir: Path, root: Path) -> list[Path]:
    """Copy the figures the README shows from a run into ``figures/``."""
    copied = []
    for name in README_FIGURES:
        src = RunFolder(run_dir).figures_dir / name
        if src.is_file():
            dst = root / "figures" / name
            atomic_write_bytes(dst, src.read_bytes())
            copied.append(dst)
    return copied
