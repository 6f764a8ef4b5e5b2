"""A JSON object that names a key twice is refused (docs/http-api-rules.md), on every body the
server parses. orjson, the parser, keeps the last value of a repeated key without a word, so
``{"x": 1, "x": 2}`` would be read as ``{"x": 2}``; the check here runs after it, exact, and cheap
enough for the predict path (docs/benchmarks.md has the figures).

Why it is exact: in valid JSON every member of an object has exactly one ``:`` outside strings,
so the body's members number at most its ``:`` bytes, and orjson's result holds exactly as many
keys as there are members when no object repeats a key, fewer when one does. So when the keys
counted in the parsed result reach the count of ``:`` bytes, nothing is repeated; that is the
common case, decided by one vectorised pass over the bytes and a count of the parsed objects'
keys that stops as soon as it reaches that figure (a list of 1,000 rows is counted in C, and
its values are never visited). Only when the counts differ (a string value holding ``:``, or a
repeated key) is a tighter bound taken (a member's ``:`` follows the key's closing quote or
whitespace), and only when that still differs is the body read again by a parser that sees
every member (the standard library's, with ``object_pairs_hook``). Keys are compared as orjson
compares them, decoded: ``"x"`` and ``"\\u0078"`` are the same key.
"""
from __future__ import annotations

import json
import re
from functools import cache
from operator import countOf
from typing import TYPE_CHECKING, Any

from shared.core.errors import InvalidRequest

if TYPE_CHECKING:
    import numpy as np

#: Bodies shorter than this are counted with ``bytes.count``, longer ones with numpy (about
#: 1.3 µs to set up, then some ten times faster per byte).
NUMPY_FROM = 2048
_COLON = ord(":")
_OPEN = ord("{")


@cache
def _before_member_colon() -> np.ndarray:
    """The bytes that may come just before a member's ``:``: the key's closing quote, or whitespace."""
    import numpy as np  # here: numpy stays off the app's start-up (a health probe needs none)

    table = np.zeros(256, dtype=bool)
    table[list(b'" \t\n\r')] = True
    return table

#: A JSON text's tokens that matter for keys: strings (escapes included), brackets, commas and
#: colons; numbers, literals and whitespace between them are skipped.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},:]', re.DOTALL)


def colons_in(raw: bytes | memoryview) -> int:
    """How many ``:`` bytes ``raw`` holds. Counted before the body is parsed, the pass also
    brings the bytes into the cache for the parser (measured: 20-30 µs less than after it, on
    a 750 KB body)."""
    if len(raw) < NUMPY_FROM:
        return (raw if type(raw) is bytes else bytes(raw)).count(b":")
    import numpy as np  # here: numpy stays off the app's start-up

    return int(np.count_nonzero(np.frombuffer(raw, dtype=np.uint8) == _COLON))


def check_unique_keys(raw: bytes | memoryview, parsed: Any, colons: int | None = None) -> None:
    """Raise ``InvalidRequest`` naming the key and where, if an object in ``raw`` (a body
    parsed as ``parsed``, keeping the last of a repeated key as orjson and the standard
    library do) names a key twice. ``colons``: ``colons_in(raw)``, if already counted."""
    if colons is None:
        colons = colons_in(raw)
    if not colons:
        return
    keys = objects = 0
    if type(parsed) is dict:  # the usual bodies, counted to two levels: {"instances": [{...}, ...]}
        keys, objects = len(parsed), 1
        for value in parsed.values():
            if type(value) is list:
                if len(value) < 8:  # a row or a few: a loop is quicker than setting up the C calls
                    for item in value:
                        if type(item) is dict:
                            keys += len(item)
                            objects += 1
                elif countOf(map(type, value), dict) == len(value):
                    keys += sum(map(len, value))
                    objects += len(value)
            elif type(value) is dict:
                keys += len(value)
                objects += 1
        if keys >= colons:
            return
    import numpy as np  # here: numpy stays off the app's start-up

    data = np.frombuffer(raw, dtype=np.uint8)
    # Fewer keys than colons: a string holds a ':' or a key is repeated. Every object counted
    # already when there are as many as '{' bytes; else count them all.
    if not objects or objects < np.count_nonzero(data == _OPEN):
        keys = _count_keys(parsed, colons)
        if keys >= colons:
            return
    if keys >= _members_at_most(data):
        return
    repeated = _first_repeated_key(bytes(raw))
    if repeated is not None:
        key, path, nested = repeated
        where = f"'{path}'" if nested else "the body's top-level object"
        raise InvalidRequest(f"key '{key}' is given twice in {where}; a JSON object must name each key once",
                             field=key, at=path)


def _count_keys(root: Any, enough: int) -> int:
    """The number of keys in every object of ``root``, or a partial count once it reaches
    ``enough``. Breadth first, so the objects of a list of rows are counted together in C
    before any row's values would be looked at."""
    if type(root) is dict:
        keys = len(root)
    elif type(root) is list:
        keys = 0
    else:
        return 0
    level = [root]
    while level and keys < enough:
        below: list = []
        for node in level:
            if type(node) is list:
                if countOf(map(type, node), dict) == len(node):  # the common case, rows: in C
                    keys += sum(map(len, node))
                    below.extend(node)
                    if keys >= enough:
                        return keys
                    continue
                items = node
            else:
                items = node.values()
            kinds = set(map(type, items))
            if dict in kinds or list in kinds:
                for item in items:
                    if type(item) is dict:
                        keys += len(item)
                        below.append(item)
                    elif type(item) is list:
                        below.append(item)
                if keys >= enough:
                    return keys
        level = below
    return keys


def _members_at_most(data: np.ndarray) -> int:
    """An upper bound on the body's object members tighter than its count of ``:``: the colons
    just after a quote or whitespace (a colon inside a string value rarely is)."""
    import numpy as np  # here: numpy stays off the app's start-up

    colons = np.flatnonzero(data == _COLON)  # never at 0: a JSON text does not start with ':'
    return int(np.count_nonzero(_before_member_colon()[data[colons - 1]]))


class _Repeats(dict):
    """An object that names a key twice, as the standard library reads it (the last value of
    each key kept), with the first key it repeats."""

    key = ""


_CONTAINERS: frozenset[type] = frozenset((dict, list, _Repeats))


def _first_repeated_key(raw: bytes) -> tuple[str, str, bool] | None:
    """The first object of ``raw`` (valid JSON), in the order objects open, that names a key
    twice: that key, the object's path (``instances[3]``; ``""`` for the top level) and whether
    it is nested; ``None`` when no object repeats a key."""
    marked = 0

    def keep_repeats(pairs: list[tuple[str, Any]]) -> dict:  # each object a dict, marked if it repeats a key
        nonlocal marked
        read = dict(pairs)
        if len(read) == len(pairs):
            return read
        seen = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        marked += 1
        repeats = _Repeats(read)
        repeats.key = key
        return repeats

    try:
        tree = json.loads(raw, object_pairs_hook=keep_repeats)
    except RecursionError:  # deeper than the standard library's parser goes; orjson reads 1,024 levels
        return _scan(raw)
    if not marked:
        return None
    # Depth first, in document order, with no recursion. An object dropped as the value of a
    # repeated key is missing from the tree, but the object that repeated it opened before it.
    stack: list[tuple[Any, str, bool]] = [(tree, "", False)]
    while stack:
        node, path, nested = stack.pop()
        if type(node) is _Repeats:
            return node.key, path, nested
        if isinstance(node, dict):
            if _CONTAINERS.isdisjoint(map(type, node.values())):
                continue
            children = [(v, f"{path}.{k}" if path else k, True) for k, v in node.items() if type(v) in _CONTAINERS]
        elif type(node) is list:
            if _CONTAINERS.isdisjoint(map(type, node)):
                continue
            children = [(v, f"{path}[{i}]", True) for i, v in enumerate(node) if type(v) in _CONTAINERS]
        else:
            continue
        stack.extend(reversed(children))
    return None


def _scan(raw: bytes) -> tuple[str, str, bool] | None:
    """``_first_repeated_key`` for a body too deep for the standard library's parser: a flat
    scan of the tokens with a stack of the open objects (the keys seen, the current key) and
    arrays (the current index). It names the first repeat met in the text."""
    stack: list[list[Any]] = []  # [keys seen, or None in an array; the current key or index]
    last = b""
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[0]
        if first == 0x22:  # '"'
            last = token
        elif first == 0x3A:  # ':' ends a key: the string just read
            key = last[1:-1].decode() if b"\\" not in last else json.loads(last)
            seen = stack[-1][0]
            if key in seen:
                return key, _path(stack[:-1]), len(stack) > 1
            seen.add(key)
            stack[-1][1] = key
        elif first == 0x2C:  # ','
            if stack[-1][0] is None:
                stack[-1][1] += 1
        elif first == 0x7B:  # '{'
            stack.append([set(), None])
        elif first == 0x5B:  # '['
            stack.append([None, 0])
        else:  # '}' or ']'
            stack.pop()
    return None


def _path(frames: list[list[Any]]) -> str:
    """``instances[3]``, ``dataframe_split.data``: where the innermost open value is."""
    out = ""
    for seen, position in frames:
        out += f"[{position}]" if seen is None else (f".{position}" if out else position)
    return out
