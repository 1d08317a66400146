"""The import graph of src/uwcache has no circle but the deliberate Caching ↔ Node one.

The rule (docs/internals.md, "Import layers"): every ``import`` counts, at module level or
inside a function, except those under ``if TYPE_CHECKING:`` (never run). A function-level
import still ties the two modules' designs together, so it counts even though it cannot fail
at import time. Only ``Caching`` (config.py) may reach up to the layer it starts: ``Node``
(``Caching.start()``, node.py imports config). ``Caching`` sits above the options
(options.py, with the near tier's ``NearOptions``) and the uWSGI syntaxes (uwsgi_config.py,
with the near tier's cache2 keys), so it no longer imports the near tier at all (issue 14
point 2). Module-level imports alone must have no circle at all.
"""

from __future__ import annotations

import ast
import pathlib
from typing import Dict, List, Set, Tuple

import uwcache

PACKAGE = pathlib.Path(uwcache.__file__).parent
#: the deliberate back-edge: (importer, imported), inside a function of Caching
DELIBERATE = {("uwcache.config", "uwcache.node")}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module_level_only: bool) -> List[ast.stmt]:
    found: List[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub, in_function)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (module_level_only and in_function):
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def import_graph(module_level_only: bool = False) -> Dict[str, Set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: Dict[str, Set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        deps: Set[str] = set()
        for node in _imports(ast.parse(path.read_text()), module_level_only):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = name.split(".") if is_package else name.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in paths else prefix for a in node.names]
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target not in (name, "uwcache"):
                    deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _without(graph: Dict[str, Set[str]], edges: Set[Tuple[str, str]]) -> Dict[str, Set[str]]:
    return {a: {b for b in deps if (a, b) not in edges} for a, deps in graph.items()}


def test_no_circle_but_the_deliberate_one() -> None:
    graph = import_graph()
    for a, b in DELIBERATE:
        assert b in graph[a], f"{a} no longer imports {b}: drop it from DELIBERATE"
    assert cycles(_without(graph, DELIBERATE)) == []


def test_module_level_imports_have_no_circle() -> None:
    assert cycles(import_graph(module_level_only=True)) == []


def test_the_old_circle_is_gone() -> None:
    """cache → config → node → net/stats → cache (issue 14): the offline stats reader is
    uwcache.stats now, the counters are uwcache.counters, and the cache imports neither net
    nor near."""
    graph = import_graph()
    assert not any(dep.startswith("uwcache.net") for dep in graph["uwcache.stats"] | graph["uwcache.cache"])
    assert "uwcache.near" not in graph["uwcache.cache"]
    assert "uwcache.memoize" not in graph["uwcache.contrib.django"] | graph["uwcache.contrib.cachelib"]


def test_caching_sits_above_the_options() -> None:
    """config.py (Caching) imports the options and the uWSGI syntaxes, never the other way
    round, and neither the near tier; what opens a cache needs the options, not Caching."""
    graph = import_graph()
    assert "uwcache.near" not in graph["uwcache.config"]
    assert {"uwcache.options", "uwcache.uwsgi_config"} <= graph["uwcache.config"]
    assert "uwcache.config" not in graph["uwcache.options"] | graph["uwcache.uwsgi_config"]
    assert graph["uwcache.options"] <= {"uwcache._engine", "uwcache.address", "uwcache.errors"}
    for opener in ("uwcache.cache", "uwcache.lazy", "uwcache.stats", "uwcache.near"):
        assert "uwcache.config" not in graph[opener], opener
