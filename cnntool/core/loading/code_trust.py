"""Importing a user's model code, only when it is installed or the user said `--trust-code`.

The rule (issues #13, #21): code that is not part of an installed distribution needs
trust_code. That covers
- a `FILE.py:NAME` spec;
- a `module:NAME` spec whose top-level module would be found anywhere but in the interpreter's
  own library folders (the standard library, site-packages) or in the source folder of an
  installed editable distribution that owns that name.
The decision is made by where the module's file lies, not by the order of sys.path: Python
makes PYTHONPATH entries absolute at start-up, so `PYTHONPATH=.. cnntool layers evilmod:net`
puts an absolute path on sys.path that no test of "relative entry" can catch. Installed packages
(`timm.models:resnet18`, `torchvision.models:resnet18`) need no flag, and neither does a package
already imported (its code already runs in this process).

The decision is made before anything is imported: `importlib.util.find_spec` of a top-level
name locates it without executing it (for a dotted name it would import the parents, so only
the top-level name is looked up).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlparse

from cnntool.errors import ModelLoadError, UntrustedCodeError


def import_module_spec(target: str, trust_code: bool) -> ModuleType:
    """Import `package.module` of a `package.module:NAME` spec, refusing untrusted code."""
    if target in sys.modules:
        return sys.modules[target]
    top = target.split(".", 1)[0]
    folder = untrusted_folder(top)
    if folder is not None and not trust_code:
        where = (
            "the current folder"
            if Path(folder) == Path.cwd().resolve()
            else "a folder on the import path"
        )
        raise UntrustedCodeError(
            f"'{target}' would be imported from {folder} ({where}), which is not an installed "
            "package; importing it runs its code, so pass --trust-code if you trust it"
        )
    try:
        return importlib.import_module(target)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import '{target}': {exc}") from None
    except Exception as exc:
        raise ModelLoadError(
            f"importing '{target}' failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def untrusted_folder(top: str) -> str | None:
    """The folder a top-level module would come from when that is not an installed location;
    None for installed, standard-library, built-in, already imported and unknown modules."""
    if top in sys.modules:  # its code already runs in this process
        return None
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: nothing is executed
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations is not None:  # a package, or a namespace over folders
        locations = [Path(entry) for entry in spec.submodule_search_locations]
    else:
        locations = [Path(spec.origin)] if spec.origin and spec.has_location else []
    for location in locations:
        location = location.resolve()
        if not _installed(top, location):
            # a package lives in a folder on sys.path; a module file lies in one
            return str(location.parent)
    return None


def _installed(top: str, location: Path) -> bool:
    """Whether `location` (a module file or package folder named `top`) is installed code: in
    the interpreter's library folders, or in the source folder of an editable install of a
    distribution that provides `top`."""
    if any(location.is_relative_to(root) for root in _library_folders()):
        return True
    return any(location.is_relative_to(root) for root in _editable_roots(top))


@functools.cache
def _library_folders() -> tuple[Path, ...]:
    """The standard library and every site-packages folder of this interpreter (a venv's too)."""
    folders = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    folders.update(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        folders.add(site.getusersitepackages())
    return tuple(Path(folder).resolve() for folder in folders if folder)


def _editable_roots(top: str) -> list[Path]:
    """The source folders of the editable installs (`pip install -e`) that provide `top`: only
    the names a distribution declares are trusted there, not any file that lies beside them."""
    roots = []
    for name in set(importlib.metadata.packages_distributions().get(top, [])):
        # every copy of its metadata: a project's own `NAME.egg-info` in the current folder
        # comes first on sys.path and carries no direct_url.json
        for dist in importlib.metadata.distributions(name=name):
            try:
                direct = json.loads(dist.read_text("direct_url.json") or "{}")
            except (ValueError, OSError):
                continue
            url = str(direct.get("url", ""))
            if direct.get("dir_info", {}).get("editable") and url.startswith("file:"):
                roots.append(Path(unquote(urlparse(url).path)).resolve())
    return roots


def import_python_file(path: Path, trust_code: bool) -> ModuleType:
    """Run a `.py` file as a module (only with trust_code). Its folder is on sys.path while it
    runs, so `import helpers` of a sibling file works."""
    if not trust_code:
        raise UntrustedCodeError(
            f"loading {path} runs the Python code in it; pass --trust-code if you trust that file"
        )
    if not path.is_file():
        raise ModelLoadError(f"Python file {path} does not exist")
    name = f"cnntool_user_{path.stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # a name importlib has no loader for (not .py)
        raise ModelLoadError(f"{path} is not a Python file that can be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    with folder_on_path(path.parent):
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise ModelLoadError(
                f"running {path} failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from exc
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
