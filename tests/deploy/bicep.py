"""Just enough of Bicep to read what the templates declare: a ``var``'s object or array literal.

No Bicep compiler runs here (none is published on the registries this project installs
from), so the consistency tests read the template text: object keys, string values and
``queues.x``-style references, the shapes infra/ uses for everything the code must match.
"""
from __future__ import annotations

import re
from pathlib import Path

INFRA = Path(__file__).resolve().parents[2] / "infra"


def source(name: str) -> str:
    """A template's text with ``//`` comments removed (outside strings)."""
    text = (INFRA / name).read_text()
    return "\n".join(re.sub(r"\s//.*$|^//.*$", "", line) for line in text.splitlines())


def block(text: str, start: int) -> str:
    """The bracketed literal (``{...}`` or ``[...]``) that opens at or after ``start``."""
    i = min(p for p in (text.find("{", start), text.find("[", start)) if p >= 0)
    opening = text[i]
    closing = "}" if opening == "{" else "]"
    depth = 0
    for j in range(i, len(text)):
        if text[j] in "{[":
            depth += 1
        elif text[j] in "}]":
            depth -= 1
            if depth == 0:
                assert text[j] == closing, f"unbalanced literal at {i}"
                return text[i : j + 1]
    raise ValueError("unterminated literal")


def var_literal(name: str, var: str) -> str:
    """The literal assigned to ``var`` in template ``name`` (the last one, for ``union(a, {...})``)."""
    text = source(name)
    m = re.search(rf"^var {re.escape(var)} = (.*)$", text, re.M)
    if m is None:
        raise KeyError(f"{name} declares no var {var}")
    line_start = m.start(1)
    if m.group(1).startswith("union("):
        # union(base, { ... }): the object literal after the comma
        line_start = text.index(",", line_start)
    return block(text, line_start)


def object_entries(literal: str) -> dict[str, str]:
    """Top-level ``key: value`` pairs of an object literal (values as written)."""
    out = {}
    for line in literal.strip()[1:-1].splitlines():
        m = re.match(r"\s*'?([A-Za-z_][\w.]*)'?\s*:\s*(.+?)\s*$", line)
        if m and line.startswith("  ") and not line.startswith("    "):
            out[m.group(1)] = m.group(2)
    return out


def array_strings(literal: str) -> list[str]:
    """The quoted strings of an array literal."""
    return re.findall(r"'([^']*)'", literal)


def unquote(value: str, refs: dict[str, dict[str, str]] | None = None) -> str | None:
    """A literal string's value, or a ``var.key`` reference resolved through ``refs``; else None."""
    if value.startswith("'") and value.endswith("'"):
        return value[1:-1]
    m = re.fullmatch(r"(\w+)\.(\w+)", value)
    if m and refs and m.group(1) in refs:
        return unquote(refs[m.group(1)][m.group(2)], refs)
    return None
