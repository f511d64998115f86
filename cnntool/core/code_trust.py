"""Importing a user's model code, only when it is installed or the user said `--trust-code`.

The rule (issue #13): code that is not an installed distribution needs trust_code. That covers
- a `FILE.py:NAME` spec;
- a `module:NAME` spec whose top-level module would be found through the current folder, '' or
  a relative sys.path entry: `python -m` puts the current folder first on sys.path, and so does
  PYTHONPATH=. (made absolute by `site`), so an `evilmod.py` lying in the folder a command runs
  in must not be imported just because its name was typed.
Installed packages (`timm.models:resnet18`, `torchvision.models:resnet18`) need no flag, and
neither does a package already imported (its code already runs in this process).

The decision is made before anything is imported: `importlib.util.find_spec` of a top-level
name locates it without executing it (for a dotted name it would import the parents, so only
the top-level name is looked up).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from cnntool.errors import ModelLoadError, UntrustedCodeError


def import_module_spec(target: str, trust_code: bool) -> ModuleType:
    """Import `package.module` of a `package.module:NAME` spec, refusing untrusted code."""
    if target in sys.modules:
        return sys.modules[target]
    top = target.split(".", 1)[0]
    folder = untrusted_folder(top)
    if folder is not None and not trust_code:
        raise UntrustedCodeError(
            f"'{target}' would be imported from {folder}, which is the current folder (or a "
            "relative import path), not an installed package; importing it runs its code, so "
            "pass --trust-code if you trust it")
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import '{target}': {exc}") from None
    except Exception as exc:
        raise ModelLoadError(f"importing '{target}' failed: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from exc


def untrusted_folder(top: str) -> str | None:
    """The folder a top-level module would come from, when that folder is the current one or a
    relative sys.path entry; None for installed, standard-library, already imported and
    unknown modules."""
    if top in sys.modules:  # its code already runs in this process
        return None
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:
        locations = list(spec.submodule_search_locations)
    else:
        locations = [spec.origin] if spec.origin and spec.has_location else []
    untrusted = _untrusted_roots()
    for location in locations:
        # a package lives in a folder on sys.path; a module file lies in one
        folder = Path(location).resolve().parent
        if folder in untrusted:
            return str(folder)
    return None


def _untrusted_roots() -> set[Path]:
    roots = {Path.cwd().resolve()}
    for entry in sys.path:
        if isinstance(entry, str) and (entry == "" or not os.path.isabs(entry)):
            roots.add(Path(entry or ".").resolve())
    return roots


def import_python_file(path: Path, trust_code: bool) -> ModuleType:
    """Run a `.py` file as a module (only with trust_code). Its folder is on sys.path while it
    runs, so `import helpers` of a sibling file works."""
    if not trust_code:
        raise UntrustedCodeError(f"loading {path} runs the Python code in it; pass "
                                 "--trust-code if you trust that file")
    if not path.is_file():
        raise ModelLoadError(f"Python file {path} does not exist")
    name = f"cnntool_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    with folder_on_path(path.parent):
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ModelLoadError(f"running {path} failed: {type(exc).__name__}: "
                                 f"{_first_line(exc)}") from exc
    return module


@contextlib.contextmanager
def folder_on_path(folder: Path):
    """`folder` first on sys.path for the duration (a factory may import siblings late)."""
    entry = str(Path(folder).resolve())
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
