"""Evaluate the Bicep expressions the Azure ML tests depend on, as ARM would at deployment.

No Bicep compiler runs here (tests/deploy/bicep.py says why), so a template's ``var`` and
module conditions are evaluated by this small interpreter: literals (strings with ``${}``
interpolation and Bicep's escapes, integers, booleans, arrays), ``!``, ``&&``, ``||``, ``==``,
``!=``, ``?:``, member access, indexing, lambdas, and the functions those expressions call, each
with ARM's meaning (``startsWith`` ignores case, ``concat`` joins strings or arrays). An
expression using anything else raises, so a template change the tests cannot follow fails
loudly instead of being skipped.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.deploy import bicep

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}
TOKEN = re.compile(r"\s*(=>|&&|\|\||==|!=|[!?:()\[\],.]|\d+|[A-Za-z_]\w*|')")


class BicepEvalError(ValueError):
    """An expression outside the subset this interpreter knows."""


@dataclass
class Lambda:
    param: str
    body: Any
    scope: Mapping[str, Any]


def _tokens(text: str) -> list[Any]:
    out: list[Any] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        m = TOKEN.match(text, i)
        if m is None:
            raise BicepEvalError(f"cannot read {text[i:i + 20]!r}")
        tok = m.group(1)
        if tok == "'":
            string, i = _string(text, m.end(1))
            out.append(string)
            continue
        out.append(tok)
        i = m.end()
    return out


def _string(text: str, i: int) -> tuple[tuple[str, list[Any]], int]:
    """A string literal from just after its opening quote: ("str", [text or parsed expression, ...])."""
    parts: list[Any] = []
    buf = ""
    while True:
        if i >= len(text):
            raise BicepEvalError("unterminated string")
        c = text[i]
        if c == "\\":
            if text[i + 1] not in ESCAPES:
                raise BicepEvalError(f"unknown escape \\{text[i + 1]}")
            buf += ESCAPES[text[i + 1]]
            i += 2
        elif c == "'":
            parts.append(buf)
            return ("str", parts), i + 1
        elif text.startswith("${", i):
            parts.append(buf)
            buf = ""
            depth, j = 1, i + 2
            while depth:
                if text[j] == "'":
                    _, j = _string(text, j + 1)
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            parts.append(_Parser(_tokens(text[i + 2 : j - 1])).parse())
            i = j
        else:
            buf += c
            i += 1


class _Parser:
    def __init__(self, tokens: list[Any]):
        self.toks = tokens
        self.i = 0

    def peek(self, k: int = 0) -> Any:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, expected: str | None = None) -> Any:
        tok = self.peek()
        if expected is not None and tok != expected:
            raise BicepEvalError(f"expected {expected!r}, found {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.ternary()
        if self.peek() is not None:
            raise BicepEvalError(f"unexpected {self.peek()!r}")
        return node

    def ternary(self) -> Any:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            yes = self.ternary()
            self.take(":")
            return ("?:", cond, yes, self.ternary())
        return cond

    LEVELS = (("||",), ("&&",), ("==", "!="))

    def binary(self, level: int) -> Any:
        if level == len(self.LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek() in self.LEVELS[level]:
            op = self.take()
            node = (op, node, self.binary(level + 1))
        return node

    def unary(self) -> Any:
        if self.peek() == "!":
            self.take()
            return ("!", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: Any) -> Any:
        while self.peek() in (".", "[", "("):
            tok = self.take()
            if tok == ".":
                node = ("member", node, self.take())
            elif tok == "[":
                node = ("index", node, self.ternary())
                self.take("]")
            else:
                if node[0] != "name":
                    raise BicepEvalError("only named functions can be called")
                node = ("call", node[1], self.items(")"))
        return node

    def items(self, closing: str) -> list[Any]:
        out = []
        while self.peek() != closing:
            out.append(self.ternary())
            if self.peek() == ",":
                self.take()
        self.take(closing)
        return out

    def primary(self) -> Any:
        tok = self.take()
        if isinstance(tok, tuple):
            return tok
        if tok == "(":
            node = self.ternary()
            self.take(")")
            return node
        if tok == "[":
            return ("array", self.items("]"))
        if tok in ("true", "false"):
            return ("lit", tok == "true")
        if isinstance(tok, str) and tok.isdigit():
            return ("lit", int(tok))
        if isinstance(tok, str) and re.fullmatch(r"[A-Za-z_]\w*", tok):
            if self.peek() == "=>":
                self.take()
                return ("lambda", tok, self.ternary())
            return ("name", tok)
        raise BicepEvalError(f"unexpected {tok!r}")


def _concat(*args: Any) -> Any:
    if all(isinstance(a, str) for a in args):
        return "".join(args)
    if all(isinstance(a, list) for a in args):
        return [x for a in args for x in a]
    raise BicepEvalError("concat() of strings and arrays mixed")


def _unique_string(*args: str) -> str:
    # Not ARM's hash (unpublished); deterministic and 13 lower-case characters like it.
    digest = hashlib.sha256("|".join(args).encode()).hexdigest()
    return "".join(chr(ord("a") + int(c, 16) % 26) if i % 2 else c for i, c in enumerate(digest[:13]))


@dataclass
class Template:
    """A template's text, its parameters' values, and what ``resourceGroup()`` and the like return."""

    name: str
    params: Mapping[str, Any]
    deployment: Mapping[str, Any] = field(default_factory=lambda: {
        "resourceGroup": {"name": "rg-test", "id": "/subscriptions/sub/resourceGroups/rg-test"},
        "subscription": {"subscriptionId": "00000000-0000-0000-0000-000000000000", "tenantId": "tenant"},
    })

    def __post_init__(self) -> None:
        self.text = bicep.source(self.name)
        self.base = (bicep.INFRA / self.name).parent
        self._vars: dict[str, Any] = {}

    def var_text(self, var: str) -> str:
        m = re.search(rf"^var {re.escape(var)} = (.+)$", self.text, re.M)
        if m is None:
            raise KeyError(f"{self.name} declares no var {var}")
        return m.group(1)

    def var(self, var: str) -> Any:
        if var not in self._vars:
            self._vars[var] = self.eval(self.var_text(var))
        return self._vars[var]

    def condition(self, symbol: str) -> Any:
        """The ``if (...)`` of ``module symbol`` or ``resource symbol`` (True when it has none)."""
        m = re.search(rf"^(?:module|resource) {re.escape(symbol)} '[^']+' = (?:if \((.*)\) )?\{{$", self.text, re.M)
        if m is None:
            raise KeyError(f"{self.name} declares no module or resource {symbol}")
        return True if m.group(1) is None else self.eval(m.group(1))

    def eval(self, expression: str, scope: Mapping[str, Any] | None = None) -> Any:
        return self._eval(_Parser(_tokens(expression)).parse(), dict(scope or {}))

    def _functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "split": lambda s, d: s.split(d),
            "replace": lambda s, a, b: s.replace(a, b),
            "join": lambda a, d: d.join(a),
            "trim": lambda s: s.strip(),
            "empty": lambda x: x is None or len(x) == 0,
            "startsWith": lambda s, p: s.lower().startswith(p.lower()),
            "concat": _concat,
            "take": lambda x, n: x[:n],
            "uniqueString": _unique_string,
            "loadTextContent": lambda path: (self.base / path).read_text(),
            "filter": lambda a, f: [x for x in a if self._apply(f, x)],
            "map": lambda a, f: [self._apply(f, x) for x in a],
            "resourceGroup": lambda: self.deployment["resourceGroup"],
            "subscription": lambda: self.deployment["subscription"],
        }

    def _apply(self, f: Lambda, value: Any) -> Any:
        return self._eval(f.body, {**f.scope, f.param: value})

    def _eval(self, node: Any, scope: dict[str, Any]) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "str":
            return "".join(p if isinstance(p, str) else _text(self._eval(p, scope)) for p in node[1])
        if kind == "array":
            return [self._eval(n, scope) for n in node[1]]
        if kind == "name":
            name = node[1]
            if name in scope:
                return scope[name]
            if name in self.params:
                return self.params[name]
            return self.var(name)
        if kind == "lambda":
            return Lambda(node[1], node[2], scope)
        if kind == "call":
            functions = self._functions()
            if node[1] not in functions:
                raise BicepEvalError(f"function {node[1]}() is not known here")
            return functions[node[1]](*(self._eval(a, scope) for a in node[2]))
        if kind == "member":
            return self._eval(node[1], scope)[node[2]]
        if kind == "index":
            return self._eval(node[1], scope)[self._eval(node[2], scope)]
        if kind == "!":
            return not self._eval(node[1], scope)
        if kind == "&&":
            return self._eval(node[1], scope) and self._eval(node[2], scope)
        if kind == "||":
            return self._eval(node[1], scope) or self._eval(node[2], scope)
        if kind in ("==", "!="):
            equal = self._eval(node[1], scope) == self._eval(node[2], scope)
            return equal if kind == "==" else not equal
        if kind == "?:":
            return self._eval(node[2] if self._eval(node[1], scope) else node[3], scope)
        raise BicepEvalError(f"cannot evaluate {kind}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise BicepEvalError(f"cannot interpolate {type(value).__name__}")
