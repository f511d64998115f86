"""Every `cnntool` import in benchmarks/, scripts/ and examples/ resolves (#26).

Nothing else runs those files in the suite, so a refactor that renames or removes a name they
import (benchmarks/microscope_bench.py once imported a removed `tasks.microscope.spread`) would
go unnoticed until someone runs them. Each file is parsed (not run); for every
`from cnntool.X import a, b` and `import cnntool.X` anywhere in it, inside functions too, the
module must import and hold the names.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers import ROOT

FOLDERS = ("benchmarks", "scripts", "examples")


def _files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def cnntool_imports(source: str) -> list[tuple[int, str, str | None]]:
    """(line, module, name) for each cnntool import in `source`; name None for `import X`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names if _ours(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
    return found


def _ours(module: str | None) -> bool:
    return module is not None and (module == "cnntool" or module.startswith("cnntool."))


def unresolved(module: str, name: str | None) -> str | None:
    """Why `from MODULE import NAME` (`import MODULE` when NAME is None) fails; None if it works."""
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        return f"{module} does not import ({exc})"
    if name is None or name == "*" or hasattr(imported, name):
        return None
    try:  # a submodule (`from cnntool.core import zoo`) is found by importing it
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return f"{module} has no name {name}"
    return None


def test_the_folders_hold_cnntool_imports_to_check():
    files = {p.relative_to(ROOT).parts[0] for p in _files() if cnntool_imports(p.read_text())}
    assert files == set(FOLDERS)


def test_a_removed_name_is_found():
    source = "def main():\n    from cnntool.core.data import open_data, no_such_name\n"
    assert cnntool_imports(source) == [
        (2, "cnntool.core.data", "open_data"),
        (2, "cnntool.core.data", "no_such_name"),
    ]
    assert unresolved("cnntool.core.data", "open_data") is None
    assert unresolved("cnntool.core.data", "no_such_name") == (
        "cnntool.core.data has no name no_such_name"
    )
    assert unresolved("cnntool.core.loading", "zoo") is None
    assert unresolved("cnntool.core.no_such_module", None).startswith(
        "cnntool.core.no_such_module does not import"
    )


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cnntool_import_resolves(path):
    failures = [
        f"{path.relative_to(ROOT)}:{line}: {why}"
        for line, module, name in cnntool_imports(path.read_text())
        if (why := unresolved(module, name))
    ]
    assert not failures, "\n".join(failures)
