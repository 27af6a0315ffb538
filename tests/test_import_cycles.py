"""The shape of the code: no import cycles in chexlib, no module over 450 lines, and no test
module importing another (shared helpers are in ``tests/support.py``).

The modules are read with :mod:`ast`, never imported, so every import counts: at the top of a
module and inside functions, ``import a.b``, ``from a import b`` (``b`` a name or a submodule)
and relative imports. Importing ``chexlib.a.b`` also runs the package ``chexlib.a``, so it counts
as importing ``chexlib.a`` too, except where ``chexlib.a`` encloses the importing module (it has
been initialised before that module runs). Dynamic imports (``importlib.import_module``) are not
seen.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "chexlib"
MAX_LINES = 450


def module_files(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package in folder ``package``.

    A package is named by its ``__init__.py`` (``chexlib.data`` for ``chexlib/data/__init__.py``).
    """
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _packages_above(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _from_base(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` statement imports from."""
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imports_of(importer: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that module ``importer`` (file ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    enclosing = set(_packages_above(importer))
    found: set[str] = set()

    def add(target: str) -> None:
        """``target`` is run by the import, and so is every package above it."""
        if target in modules and target != importer:
            found.add(target)
        for package in _packages_above(target):
            if package in modules and package not in enclosing and package != importer:
                found.add(package)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, importer, path.name == "__init__.py")
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in modules]
            for name in submodules:
                add(name)
            if len(submodules) < len(names) or not submodules:
                add(base)  # a name defined in ``base`` itself: its code runs first
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    modules = module_files(package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle ``[a, b, ..., a]`` through each group of modules that import each other.

    The groups are the strongly connected components (Tarjan's algorithm, iterative) with more
    than one module, or one module importing itself.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(sorted(component))
    return [_cycle_in(graph, members) for members in components]


def _cycle_in(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """A shortest cycle through the first of ``members`` (a strongly connected component)."""
    start, inside = members[0], set(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in inside and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{members} is not a strongly connected component")


# --------------------------------------------------------------------------------------------
# the package
# --------------------------------------------------------------------------------------------


def test_chexlib_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "chexlib.train.loop" in graph and graph["chexlib.data"], "the package was not read"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in chexlib:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_test_modules_import_no_other_test_module():
    """Shared test helpers live in ``tests/support.py`` (or ``conftest.py``), not in a test."""
    tests = Path(__file__).resolve().parent
    test_modules = {path.stem for path in tests.glob("test_*.py")}
    offenders = {}
    for path in sorted(tests.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            hits = sorted(name for name in names if name.split(".")[0] in test_modules)
            if hits:
                offenders.setdefault(path.name, []).extend(hits)
    assert not offenders, f"test modules importing test modules: {offenders}"


def test_no_chexlib_module_is_over_the_line_limit():
    lengths = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in module_files(PACKAGE).values()
    }
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines (split them by concept): {too_long}"


# --------------------------------------------------------------------------------------------
# the cycle finder itself
# --------------------------------------------------------------------------------------------


def test_find_cycles_on_a_synthetic_graph():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "e"}, "f": {"d"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder / "pkg"


def test_every_kind_of_import_is_seen(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "import os\n\ndef f():\n    from . import b\n",
        "pkg/b.py": "import pkg.sub.c\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from ..d import g\nfrom pkg.sub import e\n",
        "pkg/sub/e.py": "",
        "pkg/d.py": "def g():\n    import pkg.a as a\n",
    })  # fmt: skip
    graph = import_graph(package)
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},  # inside a function, relative
        "pkg.b": {"pkg.sub", "pkg.sub.c"},  # pkg.sub's __init__ runs first
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.d", "pkg.sub.e"},  # its own package pkg.sub is already initialised
        "pkg.sub.e": set(),
        "pkg.d": {"pkg.a"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.d", "pkg.a"]]


def test_a_name_from_the_enclosing_package_closes_a_cycle(tmp_path):
    package = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\nVALUE = 1\n",
        "pkg/a.py": "def f():\n    from pkg import VALUE\n",
    })  # fmt: skip
    assert find_cycles(import_graph(package)) == [["pkg", "pkg.a", "pkg"]]
