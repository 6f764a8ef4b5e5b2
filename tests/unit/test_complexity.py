"""No function of ``shared/``, ``functions/``, ``devhost/`` or ``mlops/`` above radon's grade C
(cyclomatic complexity over 20) without a comment saying why it must be long.

The comment is ``# long: <why>``, in the block of comment lines right above the ``def`` (or
above its decorators). A long function is usually several steps that want names of their own;
the few that must stay whole (a parser on the request path, a flat dispatch) say so where a
reader meets them.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from radon.complexity import cc_visit
from radon.visitors import Class, Function

from tests.conftest import ROOT

PACKAGES = ("shared", "functions", "devhost", "mlops")
#: radon's grade C ends at 20; D (21-30) and worse need a reason.
LIMIT = 20
MARK = "# long:"


def _functions(blocks: list) -> Iterator[Function]:
    """Every function radon rates, methods, closures and those of nested classes included, once
    each (``cc_visit`` lists a top-level class's methods both on their own and in the class)."""
    seen: set[int] = set()

    def walk(blocks: list) -> Iterator[Function]:
        for block in blocks:
            if isinstance(block, Class):
                yield from walk([*block.methods, *block.inner_classes])
            elif block.lineno not in seen:
                seen.add(block.lineno)
                yield block
                yield from walk(block.closures)

    return walk(blocks)


def _first_lines(source: str) -> dict[int, int]:
    """For each function's ``def`` line, the line it starts on: its first decorator's, if any."""
    return {node.lineno: min([node.lineno, *(d.lineno for d in node.decorator_list)])
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _says_why(lines: list[str], first: int) -> bool:
    """Whether the comment lines right above line ``first`` (1-based) hold a ``# long:`` reason."""
    i = first - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        if lines[i].lstrip().startswith(MARK):
            return True
        i -= 1
    return False


def unexplained_long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int, int]]:
    """``(name, def line, complexity)`` of each function in ``source`` over ``limit`` with no reason."""
    lines = source.splitlines()
    first = _first_lines(source)
    out = []
    for fn in _functions(cc_visit(source)):
        if fn.complexity > limit and not _says_why(lines, first.get(fn.lineno, fn.lineno)):
            out.append((fn.fullname, fn.lineno, fn.complexity))
    return out


def _sources() -> Iterator[tuple[str, Path]]:
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def test_no_function_is_over_complexity_20_without_saying_why():
    found = [f"{rel}:{line} {name} (complexity {cc})"
             for rel, path in _sources()
             for name, line, cc in unexplained_long_functions(path.read_text(encoding="utf-8"))]
    assert found == [], ("split these into named steps, or put '# long: <why>' right above the def:\n"
                         + "\n".join(found))


def _branches(indent: str) -> str:
    """A body of 21 ``if``s: complexity 22, grade D."""
    return "\n".join(f"{indent}if x == {i}:\n{indent}    return {i}" for i in range(21)) + f"\n{indent}return -1"


def test_the_check_finds_a_long_function_and_accepts_a_reason():
    source = f"""
def long_one(x):
{_branches("    ")}


class Host:
    # long: a flat dispatch, one branch per message kind
    # (a reason may run over several comment lines)
    @staticmethod
    def handle(x):
{_branches("        ")}

    # a comment that gives no reason
    def other(self, x):
{_branches("        ")}


def short_one(x):
    return x
"""
    lines = source.splitlines()
    other = next(i for i, line in enumerate(lines, 1) if "def other" in line)
    assert unexplained_long_functions(source) == [("long_one", 2, 22), ("Host.other", other, 22)]
