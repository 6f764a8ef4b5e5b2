"""Type-check infra/'s resource declarations against Azure's published resource types, offline.

    python -m tools.bicep_check                 # every infra/**/*.bicep, against .bicep-types/
    python -m tools.bicep_check FILE... [--cache DIR]

No Bicep compiler can be installed here (it ships only from NuGet and release pages), so the
templates would first meet their types at a deploy. This is the next best check: the types
come from bicep-types-az, the definitions the compiler itself loads, cached for just the
types infra/ declares by ``python -m tools.bicep_types CHECKOUT``. For each ``resource``:

- its ``type@apiVersion`` exists;
- every property key written exists in that type (into objects, arrays of objects and
  discriminated unions), in its exact case;
- a literal assigned to a typed property fits it: a string in an enum's values, an integer in
  its range, no string where a number or bool goes;
- no read-only property is written, and no required one is missing from an object written
  out in full; a string literal fits its type's length and pattern;
- the type can be deployed (or, ``existing``, read) at the template's ``targetScope``.

Those are what the compiler reports (BCP037, BCP089, BCP036, BCP073, BCP035, BCP081); infra/lint.sh
fails on its warnings, so each would fail the workflow. A value the check cannot judge (an
expression, a parameter, a key built by interpolation, a shape the types leave open) is
counted as unchecked, never as passed or failed. A string outside an *open* enum (one the
types let take any string) is printed as a note: the compiler accepts it.

Findings print as ``file:line: message``; the exit status is 1 on any finding, 2 without the
cache (``--checkout DIR`` reads a checkout instead). pycep-parser (checkov's Bicep parser)
is not used: its output makes ``'x'`` and the identifier ``x`` the same string and keeps no
line per property, so a small parser below reads the declarations instead.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
CACHE = ROOT / ".bicep-types"
CACHE_FILE = "types.json"

# bicep-types property flags
REQUIRED, READ_ONLY = 1, 2
# bicep-types ScopeType flags, by Bicep's targetScope names (extension resources: with scope:)
SCOPES = {"tenant": 1, "managementGroup": 2, "subscription": 4, "resourceGroup": 8}
# Keys Bicep itself adds to every resource body.
BICEP_KEYS = {"parent", "scope", "dependsOn"}


class BicepSyntaxError(ValueError):
    """The template is not Bicep this parser understands."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


# --- a minimal Bicep reader: tokens, then the values of resource declarations -------------

@dataclass
class Tok:
    kind: str  # name, str, istr (interpolated), num, punct, nl
    text: str
    line: int


_PUNCT = sorted(["{", "}", "[", "]", "(", ")", ":", ",", ".", "?", "!", "=", "==", "!=", "<", ">", "<=", ">=",
                 "&&", "||", "??", "=>", "@", "+", "-", "*", "/", "%", ".?", "?.", "=~", "!~", "::"],
                key=len, reverse=True)


def _string(src: str, i: int, line: int) -> tuple[Tok, int, int]:
    """The string starting at ``src[i]`` (a quote): its token, the index after it, lines it spans."""
    if src.startswith("'''", i):
        end = src.find("'''", i + 3)
        if end < 0:
            raise BicepSyntaxError(line, "unterminated multi-line string")
        body = src[i + 3 : end]
        return Tok("str", body.removeprefix("\n"), line), end + 3, body.count("\n")
    j, out, interpolated, depth = i + 1, [], False, 0
    while j < len(src):
        c = src[j]
        if depth:
            # inside ${...}: skip to its closing brace (nested strings included)
            if c == "'":
                _, j, _ = _string(src, j, line)
                continue
            depth += {"{": 1, "}": -1}.get(c, 0)
            j += 1
            continue
        if c == "\\" and j + 1 < len(src):
            out.append({"n": "\n", "r": "\r", "t": "\t"}.get(src[j + 1], src[j + 1]))
            j += 2
        elif c == "$" and src.startswith("${", j):
            interpolated, depth = True, 1
            j += 2
        elif c == "'":
            return Tok("istr" if interpolated else "str", "".join(out), line), j + 1, 0
        elif c == "\n":
            raise BicepSyntaxError(line, "unterminated string")
        else:
            out.append(c)
            j += 1
    raise BicepSyntaxError(line, "unterminated string")


def tokenize(src: str) -> list[Tok]:
    """Bicep's tokens; newlines kept (they separate statements, object entries and array items)."""
    toks: list[Tok] = []
    i, line = 0, 1
    while i < len(src):
        c = src[i]
        if c == "\n":
            toks.append(Tok("nl", "\n", line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif src.startswith("//", i):
            end = src.find("\n", i)
            i = len(src) if end < 0 else end
        elif src.startswith("/*", i):
            end = src.find("*/", i + 2)
            if end < 0:
                raise BicepSyntaxError(line, "unterminated comment")
            line += src.count("\n", i, end)
            i = end + 2
        elif c == "'":
            tok, i, spanned = _string(src, i, line)
            toks.append(tok)
            line += spanned
        elif m := re.compile(r"\d+(\.\d+)?").match(src, i):
            toks.append(Tok("num", m.group(), line))
            i = m.end()
        elif m := re.compile(r"[A-Za-z_$][\w$]*").match(src, i):
            toks.append(Tok("name", m.group(), line))
            i = m.end()
        else:
            p = next((p for p in _PUNCT if src.startswith(p, i)), None)
            if p is None:
                raise BicepSyntaxError(line, f"unexpected character {c!r}")
            toks.append(Tok("punct", p, line))
            i += len(p)
    return toks


@dataclass
class Value:
    """A value as written: ``kind`` is object, array, loop, cond, str, int, bool, null or expr."""

    kind: str
    line: int
    # object: (key, or None when built by interpolation; its line; its value)
    entries: list[tuple[str | None, int, Value]] = field(default_factory=list)
    items: list[Value] = field(default_factory=list)  # array items; loop: [body]; cond: [then, else]
    literal: Any = None


@dataclass
class Resource:
    symbol: str
    type: str
    api_version: str
    existing: bool
    line: int
    body: Value


_OPEN = {"{": "}", "[": "]", "(": ")"}


def _group_end(toks: list[Tok], i: int) -> int:
    """Index of the closer matching the opener at ``toks[i]``."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].kind == "punct" and toks[j].text in _OPEN:
            depth += 1
        elif toks[j].kind == "punct" and toks[j].text in _OPEN.values():
            depth -= 1
            if depth == 0:
                return j
    raise BicepSyntaxError(toks[i].line, f"unclosed {toks[i].text}")


def _split(toks: list[Tok], lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The ``[a, b)`` spans of ``toks[lo:hi]`` separated by newlines or commas at depth 0."""
    start = j = lo
    while j < hi:
        t = toks[j]
        if t.kind == "punct" and t.text in _OPEN:
            j = _group_end(toks, j) + 1
            continue
        if t.kind == "nl" or (t.kind == "punct" and t.text == ","):
            if start < j:
                yield start, j
            start = j + 1
        j += 1
    if start < hi:
        yield start, hi


def _top_level(toks: list[Tok], lo: int, hi: int, text: str) -> int:
    """Index of the first ``text`` punctuation at depth 0 in ``toks[lo:hi]`` outside a nested ``?:``; -1 if none."""
    pending = 0
    j = lo
    while j < hi:
        t = toks[j]
        if t.kind == "punct" and t.text in _OPEN:
            j = _group_end(toks, j) + 1
            continue
        if t.kind == "punct":
            if t.text == text and (text == "?" or pending == 0):
                return j
            if t.text == "?":
                pending += 1
            elif t.text == ":":
                pending -= 1
        j += 1
    return -1


def parse_value(toks: list[Tok], lo: int, hi: int) -> Value:
    """The value written in ``toks[lo:hi]`` (newlines inside allowed)."""
    while lo < hi and toks[lo].kind == "nl":
        lo += 1
    while hi > lo and toks[hi - 1].kind == "nl":
        hi -= 1
    if lo >= hi:
        raise BicepSyntaxError(toks[lo - 1].line if lo else 0, "missing value")
    first = toks[lo]
    q = _top_level(toks, lo, hi, "?")
    if q >= 0:
        colon = _top_level(toks, q + 1, hi, ":")
        if colon < 0:
            raise BicepSyntaxError(toks[q].line, "? without :")
        return Value("cond", first.line, items=[parse_value(toks, q + 1, colon), parse_value(toks, colon + 1, hi)])
    if first.kind == "punct" and first.text in "{[" and _group_end(toks, lo) == hi - 1:
        return _parse_object(toks, lo, hi - 1) if first.text == "{" else _parse_array(toks, lo, hi - 1)
    if first.kind == "name" and first.text == "if" and hi - lo > 1 and toks[lo + 1].text == "(":
        # a resource body's condition: if (cond) { ... }
        return parse_value(toks, _group_end(toks, lo + 1) + 1, hi)
    if hi - lo == 1:
        if first.kind == "str":
            return Value("str", first.line, literal=first.text)
        if first.kind == "num" and "." not in first.text:
            return Value("int", first.line, literal=int(first.text))
        if first.kind == "name" and first.text in ("true", "false"):
            return Value("bool", first.line, literal=first.text == "true")
        if first.kind == "name" and first.text == "null":
            return Value("null", first.line)
    if hi - lo == 2 and first.text == "-" and toks[lo + 1].kind == "num" and "." not in toks[lo + 1].text:
        return Value("int", first.line, literal=-int(toks[lo + 1].text))
    return Value("expr", first.line)


def _parse_object(toks: list[Tok], lo: int, close: int) -> Value:
    obj = Value("object", toks[lo].line)
    for a, b in _split(toks, lo + 1, close):
        if toks[a].kind == "punct" and toks[a].text == "@":
            raise BicepSyntaxError(toks[a].line, "decorators inside an object are not read")
        if toks[a].kind == "name" and toks[a].text == "resource" and b - a > 3 and toks[a + 2].kind == "str":
            # a child resource declared in its parent's body
            nested: list[Resource] = []
            _resource(toks, a, nested)
            obj.entries.append((None, toks[a].line, Value("resource", toks[a].line, literal=nested[0])))
            continue
        if b - a < 3 or toks[a + 1].text != ":":
            raise BicepSyntaxError(toks[a].line, "expected key: value")
        key = toks[a]
        name = key.text if key.kind in ("name", "str") else None
        if key.kind not in ("name", "str", "istr"):
            raise BicepSyntaxError(key.line, f"unexpected key {key.text!r}")
        obj.entries.append((name, key.line, parse_value(toks, a + 2, b)))
    return obj


def _parse_array(toks: list[Tok], lo: int, close: int) -> Value:
    j = lo + 1
    while toks[j].kind == "nl":
        j += 1
    if toks[j].kind == "name" and toks[j].text == "for":
        colon = _top_level(toks, j + 1, close, ":")
        if colon < 0:
            raise BicepSyntaxError(toks[j].line, "for without :")
        return Value("loop", toks[lo].line, items=[parse_value(toks, colon + 1, close)])
    return Value("array", toks[lo].line, items=[parse_value(toks, a, b) for a, b in _split(toks, lo + 1, close)])


def resources(src: str) -> list[Resource]:
    """The ``resource`` declarations of a template, with their bodies."""
    toks = tokenize(src)
    out: list[Resource] = []
    i = 0
    at_start = True
    while i < len(toks):
        t = toks[i]
        if t.kind == "punct" and t.text in _OPEN:
            i = _group_end(toks, i) + 1
            at_start = False
            continue
        if t.kind == "nl":
            at_start = True
            i += 1
            continue
        if at_start and t.kind == "name" and t.text == "resource":
            i = _resource(toks, i, out)
            _children(out[-1], out)
            continue
        at_start = False
        i += 1
    return out


def _resource(toks: list[Tok], i: int, out: list[Resource]) -> int:
    start = toks[i]
    if i + 3 >= len(toks) or toks[i + 1].kind != "name" or toks[i + 2].kind != "str":
        raise BicepSyntaxError(start.line, "expected resource NAME 'TYPE@VERSION'")
    type_, _, version = toks[i + 2].text.partition("@")
    j = i + 3
    existing = toks[j].kind == "name" and toks[j].text == "existing"
    j += existing
    if toks[j].text != "=":
        raise BicepSyntaxError(start.line, "expected = after the resource type")
    lo = j + 1
    # the body: { }, [for ...: { }], or if (...) { }
    k = lo
    if toks[k].kind == "name" and toks[k].text == "if":
        k = _group_end(toks, k + 1) + 1
    end = _group_end(toks, k) + 1
    out.append(Resource(toks[i + 1].text, type_, version, existing, start.line, parse_value(toks, lo, end)))
    return end


def _children(parent: Resource, out: list[Resource]) -> None:
    """Move the child resources declared in ``parent``'s body to ``out``, with their full types."""
    body = parent.body.items[0] if parent.body.kind == "loop" else parent.body
    if body.kind != "object":
        return
    kept = []
    for entry in body.entries:
        child = entry[2].literal
        if entry[2].kind != "resource":
            kept.append(entry)
            continue
        child.type = f"{parent.type}/{child.type}"
        child.api_version = child.api_version or parent.api_version
        out.append(child)
        _children(child, out)
    body.entries = kept


# --- the types (the cache's closures of bicep-types-az's types.json) ----------------------

class Types:
    """One resource type's body and the types it references, as bicep-types-az writes them."""

    def __init__(self, types: list[dict[str, Any]], body: int) -> None:
        self.types = types
        self.body = types[body]

    def get(self, ref: dict[str, str]) -> dict[str, Any]:
        path = ref["$ref"]
        if not path.startswith("#/"):
            raise ValueError(f"a reference outside its file: {path}")
        return self.types[int(path[2:])]


def load_cache(cache: Path) -> dict[str, Any]:
    """The cache ``tools/bicep_types.py`` writes; FileNotFoundError without it."""
    return json.loads((cache / CACHE_FILE).read_text())


# --- the check ----------------------------------------------------------------------------

@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resources: int = 0
    resources_unchecked: int = 0
    properties: int = 0
    literals: int = 0
    enum_literals: int = 0
    unchecked: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"bicep types: {self.resources} resources checked ({self.resources_unchecked} unchecked), "
                f"{self.properties} property keys, {self.literals} literals ({self.enum_literals} of them "
                f"enum values); {len(self.unchecked)} values unchecked (expressions, built keys, scopes); "
                f"{len(self.findings)} findings, {len(self.notes)} notes")


class Checker:
    def __init__(self, cache: dict[str, Any], report: Report, where: str) -> None:
        self.cache = cache
        self.report = report
        self.where = where
        self.lookup = {name.lower(): name for name in cache["resources"]}
        self.target_scope = "resourceGroup"

    def finding(self, line: int, message: str) -> None:
        self.report.findings.append(f"{self.where}:{line}: {message}")

    def note(self, line: int, message: str) -> None:
        self.report.notes.append(f"{self.where}:{line}: note: {message}")

    def resource(self, res: Resource) -> None:
        name = f"{res.type}@{res.api_version}"
        known = self.lookup.get(name.lower())
        if known is None:
            missing = {m.lower(): v for m, v in self.cache.get("missing", {}).items()}
            if name.lower() in missing:
                versions = missing[name.lower()]
                hint = f" (it has: {', '.join(versions[-5:])})" if versions else " (no version of that type)"
                self.finding(res.line, f"{name}: no such resource type and API version in bicep-types-az{hint}")
                self.report.resources += 1
            else:
                self.note(res.line, f"{name} is not in the cache: rerun python -m tools.bicep_types CHECKOUT")
                self.report.resources_unchecked += 1
            return
        entry = self.cache["resources"][known]
        types = Types(entry["types"], entry["body"])
        self.report.resources += 1
        body = res.body.items[0] if res.body.kind == "loop" else res.body
        self.scope(res, body, entry, name)
        self.value(types, types.body, body, name, extra=BICEP_KEYS, existing=res.existing)

    def scope(self, res: Resource, body: Value, entry: dict[str, Any], name: str) -> None:
        """A type deployable (or, ``existing``, readable) where the template puts it."""
        allowed = entry.get("readableScopes" if res.existing else "writableScopes")
        if allowed is None:
            return
        if not res.existing and allowed == 0:
            self.finding(res.line, f"{name} cannot be deployed, only read: declare it existing")
            return
        keys = {key for key, _, _ in body.entries} if body.kind == "object" else {None}
        if "scope" in keys or None in keys:
            self.skip(res.line, f"{name} (its scope)", "an expression")
            return
        bit = SCOPES[self.target_scope]
        if not allowed & bit:
            can = ", ".join(n for n, b in SCOPES.items() if allowed & b) or "none"
            verb = "read" if res.existing else "deployed"
            self.finding(res.line, f"{name} cannot be {verb} at {self.target_scope} scope (only: {can})")

    def value(self, types: Types, t: dict[str, Any], v: Value, path: str,
              extra: set[str] | frozenset[str] = frozenset(), existing: bool = False) -> None:
        kind = t["$type"]
        if v.kind == "cond":
            for branch in v.items:
                self.value(types, t, branch, path, extra, existing)
            return
        if v.kind == "expr":
            self.skip(v.line, path, "an expression")
            return
        if kind == "AnyType":
            return
        if kind in ("ObjectType", "DiscriminatedObjectType"):
            if v.kind != "object":
                self.mismatch(v, path, "an object")
            else:
                self.object(types, t, v, path, extra, existing)
        elif kind == "ArrayType":
            if v.kind == "loop":
                self.value(types, types.get(t["itemType"]), v.items[0], f"{path}[]")
            elif v.kind == "array":
                for item in v.items:
                    self.value(types, types.get(t["itemType"]), item, f"{path}[]")
            else:
                self.mismatch(v, path, "an array")
        elif kind == "UnionType":
            self.union(types, t, v, path)
        else:
            self.scalar(t, v, path)

    def mismatch(self, v: Value, path: str, expected: str) -> None:
        if v.kind in ("str", "int", "bool", "null"):
            self.report.literals += 1
        self.finding(v.line, f"{path}: {v.kind} value where the type wants {expected}")

    def scalar(self, t: dict[str, Any], v: Value, path: str) -> None:
        kind = t["$type"]
        want = {"StringType": "str", "StringLiteralType": "str", "IntegerType": "int", "BooleanType": "bool",
                "NullType": "null"}.get(kind)
        if want is None:
            self.skip(v.line, path, f"a {kind}")
            return
        if v.kind != want:
            self.mismatch(v, path, {"str": "a string", "int": "an integer", "bool": "a bool", "null": "null"}[want])
            return
        self.report.literals += 1
        if kind == "StringLiteralType":
            self.report.enum_literals += 1
            if v.literal != t["value"]:
                self.finding(v.line, f"{path}: '{v.literal}' is not allowed: the only value is '{t['value']}'")
        elif kind == "IntegerType":
            lo, hi = t.get("minValue"), t.get("maxValue")
            if (lo is not None and v.literal < lo) or (hi is not None and v.literal > hi):
                bounds = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
                self.finding(v.line, f"{path}: {v.literal} is outside {bounds}")
        elif kind == "StringType":
            lo, hi = t.get("minLength"), t.get("maxLength")
            if (lo is not None and len(v.literal) < lo) or (hi is not None and len(v.literal) > hi):
                bounds = f"{'' if lo is None else lo}..{'' if hi is None else hi}"
                self.finding(v.line, f"{path}: '{v.literal}' has {len(v.literal)} characters, outside {bounds}")
            elif "pattern" in t:
                self.pattern(t["pattern"], v, path)

    def pattern(self, pattern: str, v: Value, path: str) -> None:
        # The patterns are .NET regular expressions; the ones Python reads alike are judged.
        try:
            matches = re.search(pattern, v.literal) is not None
        except re.error:
            self.skip(v.line, path, "a pattern Python cannot read")
            return
        if not matches:
            self.finding(v.line, f"{path}: '{v.literal}' does not match the pattern {pattern}")

    def union(self, types: Types, t: dict[str, Any], v: Value, path: str) -> None:
        members = [types.get(e) for e in t["elements"]]
        values = [m["value"] for m in members if m["$type"] == "StringLiteralType"]
        others = [m for m in members if m["$type"] != "StringLiteralType"]
        if v.kind == "str":
            if not values:
                if len(others) == 1:
                    self.scalar(others[0], v, path)
                else:
                    self.skip(v.line, path, "a union of several kinds")
                return
            self.report.literals += 1
            self.report.enum_literals += 1
            if v.literal in values:
                return
            open_ = any(m["$type"] in ("StringType", "AnyType") for m in others)
            same_case = [x for x in values if x.lower() == v.literal.lower()]
            allowed = ", ".join(f"'{x}'" for x in values)
            if open_:
                self.note(v.line, f"{path}: '{v.literal}' is none of the documented values ({allowed}); "
                          "the type takes any string")
            elif same_case:
                self.finding(v.line, f"{path}: '{v.literal}' is not allowed: did you mean '{same_case[0]}'?")
            else:
                self.finding(v.line, f"{path}: '{v.literal}' is not allowed: one of {allowed}")
            return
        same_kind = [m for m in members if _accepts(m, v)]
        if len(same_kind) == 1:
            self.value(types, same_kind[0], v, path)
        elif not same_kind and v.kind in ("int", "bool", "null"):
            self.mismatch(v, path, " or ".join(sorted({m["$type"] for m in members})))
        else:
            self.skip(v.line, path, "a union of several kinds")

    def skip(self, line: int, path: str, why: str) -> None:
        self.report.unchecked.append(f"{self.where}:{line}: unchecked: {path} ({why})")

    def object(self, types: Types, t: dict[str, Any], v: Value, path: str,
               extra: set[str] | frozenset[str], existing: bool) -> None:
        props: dict[str, dict[str, Any]]
        additional: dict[str, str] | None
        disc = None
        if t["$type"] == "DiscriminatedObjectType":
            props = dict(t["baseProperties"])
            disc = t["discriminator"]
            written = next((val for key, _, val in v.entries if key == disc), None)
            if written is None:
                self.finding(v.line, f"{path}: the required property {disc} is missing (it selects the variant)")
                return
            if written.kind != "str":
                # which variant is meant is not known: only the base properties can be judged
                for key, line, _ in v.entries:
                    if key not in props:
                        self.skip(line, f"{path}.{key}", "the variant is chosen by an expression")
                v = Value("object", v.line, entries=[e for e in v.entries if e[0] in props])
                additional = None
            else:
                self.report.properties += 1
                self.report.literals += 1
                self.report.enum_literals += 1
                variants = t["elements"]
                if written.literal not in variants:
                    allowed = ", ".join(f"'{x}'" for x in variants)
                    self.finding(written.line, f"{path}.{disc}: '{written.literal}' is not allowed: one of {allowed}")
                    return
                variant = types.get(variants[written.literal])
                props.update(variant["properties"])
                additional = variant.get("additionalProperties")
                v = Value("object", v.line, entries=[e for e in v.entries if e[0] != disc])
        else:
            props = t["properties"]
            additional = t.get("additionalProperties")
        for key, line, val in v.entries:
            if key is None:
                self.skip(line, f"{path}.<built key>", "a key built by interpolation")
                if additional is not None:
                    self.value(types, types.get(additional), val, f"{path}.*")
                continue
            if key in extra:
                self.report.properties += 1
                self.skip(line, f"{path}.{key}", "Bicep's own key: the compiler checks its value")
                continue
            prop = props.get(key)
            if prop is None:
                if additional is not None:
                    self.report.properties += 1
                    self.value(types, types.get(additional), val, f"{path}.{key}")
                    continue
                self.report.properties += 1
                self.unknown_key(props, key, line, path)
                continue
            self.report.properties += 1
            if prop.get("flags", 0) & READ_ONLY:
                self.finding(line, f"{path}.{key} is read-only: it cannot be written")
                continue
            self.value(types, types.get(prop["type"]), val, f"{path}.{key}")
        if not existing:
            written_keys = {key for key, _, _ in v.entries}
            if any(key is None for key in written_keys):
                return
            for name, prop in props.items():
                flags = prop.get("flags", 0)
                if flags & REQUIRED and not flags & READ_ONLY and name not in written_keys and name != disc:
                    self.finding(v.line, f"{path}: the required property {name} is missing")

    def unknown_key(self, props: dict[str, Any], key: str, line: int, path: str) -> None:
        writable = [n for n, p in props.items() if not p.get("flags", 0) & READ_ONLY]
        same_case = [n for n in writable if n.lower() == key.lower()]
        close = same_case or difflib.get_close_matches(key, writable, n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        self.finding(line, f"{path}: {key} is not a property of this type{hint}")


def _accepts(t: dict[str, Any], v: Value) -> bool:
    """Whether a union member of type ``t`` is the kind of ``v``."""
    kinds = {"object": ("ObjectType", "DiscriminatedObjectType"), "array": ("ArrayType",), "loop": ("ArrayType",),
             "str": ("StringType", "StringLiteralType"), "int": ("IntegerType",), "bool": ("BooleanType",),
             "null": ("NullType",)}
    return t["$type"] in kinds.get(v.kind, ())


def check_source(src: str, where: str, cache: dict[str, Any], report: Report) -> None:
    """Check one template's text; findings and counts go to ``report``."""
    checker = Checker(cache, report, where)
    m = re.search(r"^targetScope\s*=\s*'(\w+)'", src, re.M)
    if m:
        if m.group(1) not in SCOPES:
            raise BicepSyntaxError(src.count("\n", 0, m.start()) + 1, f"unknown targetScope {m.group(1)!r}")
        checker.target_scope = m.group(1)
    for res in resources(src):
        checker.resource(res)


def templates() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="templates (default: every infra/**/*.bicep)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"the types cache (default {CACHE.name}/)")
    parser.add_argument("--checkout", type=Path, help="read the types from this bicep-types-az checkout, not the cache")
    parser.add_argument("--unchecked", action="store_true", help="list every value the check could not judge")
    args = parser.parse_args(argv)
    files = args.files or templates()
    if args.checkout:
        from tools.bicep_types import Checkout, build, used_types

        cache = build(Checkout(args.checkout), used_types(files))
    else:
        try:
            cache = load_cache(args.cache)
        except FileNotFoundError:
            print(f"bicep types: no cache at {args.cache}: run python -m tools.bicep_types CHECKOUT "
                  "(a checkout of Azure/bicep-types-az) first", file=sys.stderr)
            return 2
    report = Report()
    for path in files:
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        try:
            check_source(path.read_text(), str(shown), cache, report)
        except BicepSyntaxError as e:
            # nothing of the file was judged: that fails, rather than passing unread
            report.findings.append(f"{shown}:{e.line}: this reader cannot parse it: {e}")
    for line in (report.unchecked if args.unchecked else []) + report.notes + report.findings:
        print(line)
    print(f"{report.summary()} (types from bicep-types-az {cache.get('commit', '?')[:12]})")
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
