"""No import cycle among edge_bge's modules: the graph is read from the source with ``ast``.

Every import of an edge_bge module counts, at the top of a module and inside functions alike: an
import moved into a function to dodge a circle is still a circle. Imports under ``if TYPE_CHECKING:``
never run and are left out. A cycle that exists today and is
being removed elsewhere is named in ``ALLOWED``; a new cycle fails, and so does an entry of
``ALLOWED`` that is no longer a cycle (remove it).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import edge_bge

PACKAGE = Path(edge_bge.__file__).resolve().parent

# Cycles found when this test was written, each as its modules in import order starting from the
# smallest name. Empty this as they are removed.
ALLOWED: set[tuple[str, ...]] = set()

Graph = dict[str, set[str]]


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its __init__.py)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: Mapping[str, Path]) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:  # import a.b.c: the deepest module that is ours
                name = name.rpartition(".")[0]
            if name:
                yield name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        for alias in node.names:
            if f"{base}.{alias.name}" in known:  # from package import submodule
                yield f"{base}.{alias.name}"
            elif base in known:
                yield base


def _nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node of the tree except those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            if test is not None and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def import_graph(root: Path = PACKAGE) -> Graph:
    """Module -> the modules of the package it imports anywhere in its source (top level or in functions)."""
    known = modules(root)
    graph: Graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        found = {t for node in _nodes(tree) for t in _imported(node, module, is_package, known)}
        graph[module] = found - {module}
    return graph


def _components(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan), iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.add(top)
                        if top == node:
                            break
                    found.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def cycles(graph: Mapping[str, set[str]]) -> set[tuple[str, ...]]:
    """Every elementary cycle, as its modules in import order starting from the smallest name."""
    found: set[tuple[str, ...]] = set()
    for component in _components(graph):
        if len(component) < 2:
            continue
        for start in sorted(component):  # cycles through start and larger names only: each found once
            paths = [[start]]
            while paths:
                path = paths.pop()
                for child in sorted(graph.get(path[-1], ())):
                    if child == start:
                        found.add(tuple(path))
                    elif child in component and child > start and child not in path:
                        paths.append([*path, child])
    return found


def test_the_graph_sees_top_level_and_function_level_imports():
    graph = import_graph()
    assert "edge_bge.providers" in graph["edge_bge.model"]  # from . import providers
    assert "edge_bge.batching" in graph["edge_bge.embedder"]  # from .batching import ...
    assert "edge_bge.providers.registry" in graph["edge_bge.providers.session"]  # from .registry import ...
    assert "edge_bge.providers.tensorrt" in graph["edge_bge.providers.registry"]  # from . import cuda, tensorrt
    assert "edge_bge.providers" in graph["edge_bge.cli.info"]  # inside a function: from ..providers import build_engine


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == {("a", "b")}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == {("a", "b", "c")}
    assert cycles({"a": {"b", "c"}, "b": {"a"}, "c": {"a"}}) == {("a", "b"), ("a", "c")}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == set()


def test_a_cycle_in_source_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("def f():\n    from .sub import two\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "two.py").write_text(
        "from typing import TYPE_CHECKING\nfrom .. import one\nimport pkg.sub\nif TYPE_CHECKING:\n    import pkg.three\n"
    )
    (package / "three.py").write_text("from .sub import two\n")
    graph = import_graph(package)
    assert graph["pkg.one"] == {"pkg.sub.two"} and graph["pkg.sub.two"] == {"pkg.one", "pkg.sub"}
    assert cycles(graph) == {("pkg.one", "pkg.sub.two")}


def test_no_import_cycles():
    found = cycles(import_graph())
    new = sorted(found - ALLOWED)
    assert not new, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in new)
    gone = sorted(ALLOWED - found)
    assert not gone, f"no longer cycles, remove them from ALLOWED: {gone}"
