"""The module maps: the README's folder map and chexlib's docstring name every module once.

Both are what a newcomer reads to find their way; a module missing from them (or a line naming one
that no longer exists) is a map that lies.
"""

import re
from pathlib import Path

import chexlib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "chexlib"


def _modules() -> set[str]:
    """Every module of the package as a dotted name (packages by their ``__init__``)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts))
    return names


def _listed(text: str) -> list[str]:
    """Dotted module names at the start of the map's lines: ``chexlib.x.y  what it is``."""
    return re.findall(r"^\s*`{0,2}(chexlib(?:\.\w+)*)`{0,2}\s{2,}\S", text, flags=re.M)


def _readme_map() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Folder map")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_folder_map_lists_every_module_once():
    listed = _listed(_readme_map())
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert set(listed) == _modules()


def test_package_docstring_lists_every_module_once():
    listed = _listed(chexlib.__doc__)
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert set(listed) == _modules()


def test_the_listing_reader_finds_names_and_only_names():
    text = "chexlib.a      one\n  ``chexlib.b.c``  two\nchexlib.d\nnot chexlib.e  three\n"
    assert _listed(text) == ["chexlib.a", "chexlib.b.c"]
