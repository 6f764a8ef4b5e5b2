"""The import graph of ``shared/``, ``functions/`` and ``devhost/``: no cycles, no private names
imported across modules, and every import in a direction the layers allow.

Every import counts, function-local and ``TYPE_CHECKING`` ones included: a cycle hidden inside a
function is still a cycle a reader has to untangle.
"""
from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("shared", "functions", "devhost")

#: What each part of the code may import (besides itself). ``shared.<x>`` names a subpackage or
#: a top-level module of ``shared``; the package docstrings say the same in words.
ALLOWED: dict[str, set[str]] = {
    "shared.core": set(),
    "shared.ports": {"shared.core"},
    "shared.registry": {"shared.core", "shared.ports"},
    "shared.policies": {"shared.core", "shared.registry"},
    "shared.serving": {"shared.core", "shared.ports", "shared.registry"},
    "shared.context": {"shared.core", "shared.ports", "shared.registry", "shared.serving"},
    "shared.pipeline": {"shared.core", "shared.ports", "shared.registry", "shared.serving", "shared.policies",
                        "shared.context"},
    "shared.monitoring": {"shared.core", "shared.ports", "shared.registry", "shared.serving", "shared.policies",
                          "shared.context", "shared.pipeline"},
    "shared.rollout": {"shared.core", "shared.ports", "shared.registry", "shared.serving", "shared.policies",
                       "shared.context", "shared.pipeline", "shared.monitoring"},
    "shared": {"shared"},
    "shared.lineage": {"shared"},
    "shared.ops": {"shared"},
    "functions": {"shared", "functions"},
    "devhost": {"shared", "devhost", "functions"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[tuple[str, str]]]:
    """Each module's imports of other project modules, with the name imported from each."""
    graph: dict[str, set[tuple[str, str]]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                graph[mod].update((a.name, "") for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = ".".join(package[: len(package) - node.level + 1] + [node.module])
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        graph[mod].add((f"{base}.{alias.name}", ""))
                    elif base in modules:
                        graph[mod].add((base, alias.name))
    return graph


def _part(module: str) -> str:
    """The key of ``ALLOWED`` a module belongs to."""
    parts = module.split(".")
    if parts[0] != "shared":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "shared"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


GRAPH = _imports(_modules())


def test_the_import_graph_has_no_cycles():
    # A package's __init__ importing its own submodules (a port choosing its backend) is not a
    # cycle of design, but the edge back from the submodule to the package would make it one, so
    # the edges of a package to its own children are left out.
    edges = {m: {t for t, _ in targets if t != m and not t.startswith(m + ".")} for m, targets in GRAPH.items()}
    assert _cycles(edges) == []


def test_no_private_name_is_imported_from_another_module():
    private = sorted(f"{m} imports {name} from {t}" for m, targets in GRAPH.items() for t, name in targets
                     if name.startswith("_") and t != m)
    assert private == []


def test_every_import_goes_in_a_direction_the_layers_allow():
    wrong = []
    for module, targets in GRAPH.items():
        part = _part(module)
        allowed = ALLOWED[part]
        for target, _ in targets:
            there = _part(target)
            top = target.split(".")[0]
            if there == part or there in allowed or (top in allowed and top != "shared"):
                continue
            if "shared" in allowed and target.startswith("shared"):
                continue
            wrong.append(f"{module} -> {target}")
    assert sorted(set(wrong)) == []


def test_the_request_path_has_three_layers():
    # Codecs know no runtime (model cache) and no HTTP; the runtime parses nothing (it shares
    # only the typed batch with the codecs); the edge in functions/ is the only one that knows HTTP.
    codecs = {m: targets for m, targets in GRAPH.items() if m.startswith("shared.serving.protocols")}
    assert codecs and all(t.startswith(("shared.core", "shared.serving.protocols"))
                          for ts in codecs.values() for t, _ in ts)
    runtime = {t for t, _ in GRAPH["shared.serving.runtime"] if t.startswith("shared.serving.protocols")}
    assert runtime == {"shared.serving.protocols.batch"}


def test_the_checker_sees_a_cycle_and_a_wrong_direction():
    # The checks above pass on an empty answer: show they find what they look for.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert _part("shared.core.errors") == "shared.core"
    assert "shared.serving" not in ALLOWED["shared.core"]


def _unexplained_local_imports(source: str) -> list[int]:
    """Lines of the function-local imports in ``source`` that give no reason for being local.

    A reason is a comment on the import's own lines or on the line right before it; an import
    that directly continues a block of local imports (the next line after one) shares the
    block's reason, so one comment can cover ``import pyarrow as pa`` and ``import pyarrow.parquet``.
    """
    comments = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    local: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                local.append(child)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(ast.parse(source), False)
    explained_ends: set[int] = set()
    unexplained = []
    for node in sorted(local, key=lambda n: n.lineno):
        end = node.end_lineno or node.lineno
        if comments & set(range(node.lineno - 1, end + 1)) or node.lineno - 1 in explained_ends:
            explained_ends.add(end)
        else:
            unexplained.append(node.lineno)
    return unexplained


def test_every_function_local_import_says_why_it_is_local():
    # Imports belong at the top of a module; one inside a function is there for a reason (the
    # serving app's start-up, a library only one path needs, a backend chosen by the settings),
    # and says so.
    missing = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            missing += [f"{rel}:{line}" for line in _unexplained_local_imports(path.read_text())]
    assert missing == []


def test_the_local_import_check_finds_an_unexplained_import():
    source = '''
import json

def a():
    import csv
    return csv

def b():
    # here: only this path needs it
    import pyarrow as pa
    import pyarrow.parquet as pq

    import numpy  # here: a reason of its own
    return pa, pq, numpy

def c():
    import decimal  # here: a reason

    import zlib
    return decimal, zlib
'''
    assert _unexplained_local_imports(source) == [5, 19]
