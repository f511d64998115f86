"""cnntool's modules import one another without a circle: the graph of `from cnntool… import`
and `import cnntool…` statements (top-level and inside functions; not those under
`if TYPE_CHECKING:`, which never run) has no cycle. A circle makes import order matter and
usually means two modules share names that belong in a third."""

import ast
from pathlib import Path

import cnntool

PACKAGE = Path(cnntool.__file__).parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("cnntool", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, top_level_only: bool):
    """(module, imported names) of every import that runs, at the top or inside functions."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph(top_level_only: bool) -> dict[str, set[str]]:
    """module -> the cnntool modules importing it runs (a package's __init__ included, unless
    it is the importer's own package, which is already running by then)."""
    modules = _module_names()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, names in _imports(tree, top_level_only):
            if not module.startswith("cnntool"):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            for target in targets:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # parent packages' __init__ run first
                    step = ".".join(parts[:i])
                    if step in modules and step not in own_packages:
                        graph[name].add(step)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, …, a], or None (depth-first search, iterative)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(following) == 1:
                return [*path[path.index(following) :], following]
            elif not state.get(following):
                state[following] = 1
                path.append(following)
                stack.append(iter(sorted(graph[following])))
    return None


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_real_imports():
    graph = import_graph(top_level_only=False)
    assert "cnntool.core.preprocessing" in graph["cnntool.core.images"] or (
        "cnntool.core.pixels" in graph["cnntool.core.images"]
    )
    assert "cnntool.core.loading.checkpoints" in graph["cnntool.core.loading.models"]
    assert len(graph) > 100


def test_no_import_cycle_at_the_top_level():
    assert find_cycle(import_graph(top_level_only=True)) is None


def test_no_import_cycle_counting_imports_inside_functions():
    assert find_cycle(import_graph(top_level_only=False)) is None
