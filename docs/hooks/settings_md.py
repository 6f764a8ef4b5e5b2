"""MkDocs hook: the settings table, generated from ``Settings`` at build time.

Nothing is copied by hand. Fields and their defaults come from ``Settings`` itself (the
defaults as ``Settings.from_env({})`` reads an empty environment); which variable sets a
field is found by asking ``from_env``: each candidate name (every key of
``local.settings.example.json`` and every name-like string in the settings module) is set
alone, and the field it changes is the field it sets. Descriptions are the fields' own docs in
the source: a ``#:`` comment block above a field and a ``#`` comment after it.
``<!-- settings -->`` in a page becomes the table, and ``<!-- settings-elsewhere -->`` the
list of the example file's keys that ``Settings`` does not read (the host's, the bindings'
and the platform's), each of which the page must describe in its own words.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- settings -->"
ELSEWHERE = "<!-- settings-elsewhere -->"
_MIB = 1024 * 1024


class Row(NamedTuple):
    """One line of the table."""

    field: str
    env: tuple[str, ...]
    default: str
    description: str


def settings_class() -> type:
    """The project's ``Settings`` (imported with the project on the path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from shared.core.settings import Settings

    return Settings


def example_keys() -> list[str]:
    """Every key of ``local.settings.example.json``, in its order."""
    return list(json.loads((ROOT / "local.settings.example.json").read_text())["Values"])


def _field_docs(source: str, cls_name: str) -> dict[str, str]:
    """Each field's ``#:`` block above it and ``#`` comment after it, joined."""
    lines = source.splitlines()
    comments = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    [cls] = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls_name]
    docs = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#:"):
            above.insert(0, lines[n - 1].strip()[2:].strip())
            n -= 1
        after = comments.get(node.end_lineno or node.lineno, "")
        after = after[1:].strip() if not after.startswith("#:") else ""
        text = " ".join(part for part in (" ".join(above), after) if part)
        docs[node.target.id] = re.sub(r"``(.+?)``", r"`\1`", text)  # reST literals as Markdown code
    return docs


def _env_of(cls: Any, candidates: list[str], probes: list[str]) -> dict[str, list[str]]:
    """Field name -> the variables that set it, found by setting each candidate alone."""
    base = cls.from_env({})
    compared = [f.name for f in dataclasses.fields(cls) if f.compare]
    found: dict[str, list[str]] = {}
    for key in candidates:
        for probe in probes:
            try:
                value = cls.from_env({key: probe})
            except ValueError:  # not a value this setting takes; try the next probe
                continue
            changed = [name for name in compared if getattr(value, name) != getattr(base, name)]
            if changed:
                for name in changed:
                    found.setdefault(name, []).append(key)
                break
    return found


def _show(value: Any, name: str) -> str:
    if isinstance(value, Path):
        try:
            return f"`{value.relative_to(ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, bool) or value == "":
        return "unset" if value == "" else f"`{value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, int) and name.endswith("_bytes") and value % _MIB == 0:
        return f"`{value}` ({value // _MIB} MiB)"
    if isinstance(value, int):
        return f"`{value}`"
    return f"`{value}`"


def rows() -> list[Row]:
    """The table's rows, one per field of ``Settings``, in declaration order."""
    cls = settings_class()
    source = inspect.getsource(sys.modules[cls.__module__])
    literals = sorted({s.value for s in ast.walk(ast.parse(source))
                       if isinstance(s, ast.Constant) and isinstance(s.value, str)})
    names = [s for s in literals if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", s) and (s.isupper() or "__" in s)]
    candidates = list(dict.fromkeys([*example_keys(), *names]))
    # Values a setting may take: numbers, a path or name, and the module's own lower-case words
    # (the choices of settings such as the storage backend).
    probes = ["7", "0.25", "probe-value", *(s for s in literals if re.fullmatch(r"[a-z][a-z0-9_-]*", s))]
    env = _env_of(cls, candidates, probes)
    docs = {**_field_docs(source, cls.__name__),
            **{f.name: f.metadata["doc"] for f in dataclasses.fields(cls) if "doc" in f.metadata}}
    defaults = cls.from_env({})
    return [Row(f.name, tuple(env.get(f.name, ())), _show(getattr(defaults, f.name), f.name), docs.get(f.name, ""))
            for f in dataclasses.fields(cls) if f.compare]


def elsewhere(table: list[Row]) -> list[str]:
    """Keys of the example settings file that no field of ``Settings`` reads."""
    read = {key for row in table for key in row.env}
    return [key for key in example_keys() if key not in read]


def _escape(text: str) -> str:
    """A description for a table cell: no pipes to split it, no ``<id>`` outside code taken for a tag."""
    parts = text.replace("|", "\\|").split("`")
    # Even parts are outside code spans; inside them Markdown shows < and > as they are.
    return "`".join(p.replace("<", "&lt;").replace(">", "&gt;") if i % 2 == 0 else p for i, p in enumerate(parts))


def render(table: list[Row]) -> str:
    """The table as Markdown."""
    out = ["| setting | field | default | what it does |", "|---|---|---|---|"]
    for row in table:
        env = "<br>".join(f"`{key}`" for key in row.env) or "(none)"
        out.append(f"| {env} | `{row.field}` | {row.default} | {_escape(row.description)} |")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the markers; fail the build when a key read elsewhere is not described."""
    if MARKER not in markdown and ELSEWHERE not in markdown:
        return markdown
    table = rows()
    others = elsewhere(table)
    body = markdown.replace(MARKER, "").replace(ELSEWHERE, "")
    missing = [key for key in others if f"`{key}`" not in body]
    if missing:
        raise ValueError(f"{page.file.src_path}: settings read outside Settings and not described: {missing}")
    for line in body.splitlines():  # a hand-written row for a key that Settings now reads
        first = line.split("|")[1] if line.startswith("| `") else ""
        moved = [key for row in table for key in row.env if f"`{key}`" in first]
        if moved:
            raise ValueError(f"{page.file.src_path}: {moved} are read through Settings now; delete the row "
                             "(the generated table describes them from the field docs)")
    listed = ", ".join(f"`{key}`" for key in others)
    return markdown.replace(MARKER, render(table)).replace(ELSEWHERE, listed)
