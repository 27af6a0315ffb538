"""Command line: ``python -m chexlib run|params|presets|methods``.

``python -m chexlib run [--preset NAME] [--params FILE.yaml] [-p KEY VALUE ...] [--name RUN]``
runs the notebook series into ``runs/<RUN>/``. ``python -m chexlib params`` lists every parameter,
``python -m chexlib methods`` every explanation method (the README's table).
"""

from __future__ import annotations

import argparse
import sys

from chexlib import methods
from chexlib import params as P
from chexlib.errors import ChexlibError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chexlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebook series with papermill")
    run.add_argument("--preset", default="default",
                     help=f"parameter preset: {', '.join(P.preset_names())} (default: default)")
    run.add_argument("--params", action="append", default=[], metavar="FILE.yaml",
                     help="YAML file of parameters (may repeat; later files win)")
    run.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                     help="one parameter, value parsed as YAML (may repeat; wins over files)")
    run.add_argument("--name", help="run folder name: runs/NAME (default: the preset's run_dir)")
    run.add_argument("--notebooks", help="comma-separated names or prefixes, e.g. 01,02")
    run.add_argument("--cell-timeout", type=int, default=None, metavar="SECONDS",
                     help="seconds one notebook cell may run (default 3600)")
    run.add_argument("--update-figures", action="store_true",
                     help="copy the figures the README shows from this run into figures/")
    run.add_argument("--quiet", action="store_true", help="do not echo notebook output")
    sub.add_parser("params", help="list every parameter with its default and allowed values")
    sub.add_parser("presets", help="list the presets and what each changes")
    sub.add_parser("methods", help="list the explanation methods as a Markdown table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "params":
            print(P.describe(_readers()))
        elif args.command == "presets":
            for name in P.preset_names():
                print(f"{name}: {P.load_preset(name)}")
        elif args.command == "methods":
            print(methods.table())
        else:
            return _run(args)
    except ChexlibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _readers() -> dict[str, list[str]] | None:
    """Which notebooks declare each parameter, when the notebooks are at hand (a checkout)."""
    from chexlib.project import project_root
    from chexlib.runner import parameter_readers

    folder = project_root() / "notebooks"
    return parameter_readers(folder) if folder.is_dir() else None


def _run(args) -> int:
    from chexlib import runner

    overrides = {key: P.parse_override(value) for key, value in args.p}
    if args.name:
        overrides["run_dir"] = f"runs/{args.name}"
    params = P.resolve(args.preset, files=tuple(args.params), overrides=overrides)
    only = args.notebooks.split(",") if args.notebooks else None
    timeout = args.cell_timeout or runner.DEFAULT_CELL_TIMEOUT
    try:
        result = runner.run_series(params, notebooks=only, cell_timeout=timeout,
                                   log_output=not args.quiet)
    except runner.NotebookFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.update_figures:
        for path in runner.copy_readme_figures(result.run_dir, runner.project_root()):
            print(f"updated {path}")
    total = sum(result.seconds.values())
    print(f"finished {len(result.notebooks)} notebook(s) in {total:.0f} s; see {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
