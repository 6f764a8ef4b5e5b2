"""Build ``.bicep-types/``: the resource types infra/ declares, from a bicep-types-az checkout.

    python -m tools.bicep_types CHECKOUT [--rev REV] [--cache DIR]

CHECKOUT is Azure/bicep-types-az, the type definitions the Bicep compiler loads: a work tree
or a bare git directory (then read at REV, default HEAD, with git). For every
``type@apiVersion`` a ``resource`` in infra/**/*.bicep declares, the cache keeps that
resource's body type and only the types it references (renumbered), so it stays small; one it
cannot find is kept under ``missing`` with the API versions the repository has for that type.
``tools/bicep_check.py`` reads it. The cache is git-ignored: the definitions are Microsoft's
and are never committed here; rebuild it after changing an apiVersion in infra/.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bicep_check import CACHE, CACHE_FILE, resources, templates


class Checkout:
    """Read files of a bicep-types-az checkout: a work tree, or a git directory at a revision."""

    def __init__(self, path: Path, rev: str = "HEAD") -> None:
        self.path = path
        self.tree = (path / "generated").is_dir()
        self.rev = rev
        self.commit = self._git("rev-parse", rev).strip() if not self.tree else self._tree_commit()

    def _git(self, *args: str) -> str:
        git_dir = self.path / ".git" if (self.path / ".git").exists() else self.path
        return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                              text=True).stdout

    def _tree_commit(self) -> str:
        try:
            return self._git("rev-parse", "HEAD").strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return "work tree"

    def type_files(self) -> list[str]:
        """Every ``generated/<group>/<namespace>/<apiVersion>/types.json``."""
        if self.tree:
            return sorted(str(p.relative_to(self.path)) for p in (self.path / "generated").glob("*/*/*/types.json"))
        names = self._git("ls-tree", "-r", "--name-only", self.rev, "generated").splitlines()
        return sorted(n for n in names if n.endswith("/types.json") and n.count("/") == 4)

    def read(self, name: str) -> list[dict[str, Any]]:
        text = (self.path / name).read_text() if self.tree else self._git("show", f"{self.rev}:{name}")
        return json.loads(text)


def closure(types: list[dict[str, Any]], root: int) -> tuple[list[dict[str, Any]], int]:
    """The types reachable from ``types[root]``, renumbered from 0 (the root first)."""
    order: dict[int, int] = {}
    pending = [root]
    while pending:
        index = pending.pop()
        if index in order:
            continue
        order[index] = len(order)
        _refs(types[index], lambda ref: pending.append(int(ref[2:])))
    out = [None] * len(order)
    for old, new in order.items():
        out[new] = _renumber(types[old], order)
    return out, 0  # type: ignore[return-value]


def _refs(node: Any, visit: Callable[[str], None]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                if not value.startswith("#/"):
                    raise ValueError(f"a reference outside its file: {value}")
                visit(value)
            else:
                _refs(value, visit)
    elif isinstance(node, list):
        for item in node:
            _refs(item, visit)


def _renumber(node: Any, order: dict[int, int]) -> Any:
    if isinstance(node, dict):
        return {k: (f"#/{order[int(v[2:])]}" if k == "$ref" else _renumber(v, order)) for k, v in node.items()}
    if isinstance(node, list):
        return [_renumber(item, order) for item in node]
    return node


def used_types(paths: list[Path]) -> set[str]:
    """``type@apiVersion`` of every resource declared in ``paths``."""
    return {f"{r.type}@{r.api_version}" for path in paths for r in resources(path.read_text())}


def build(checkout: Checkout, wanted: set[str]) -> dict[str, Any]:
    """The cache's content for the ``type@apiVersion`` names in ``wanted``."""
    files = checkout.type_files()
    by_namespace: dict[str, list[str]] = {}
    for name in files:
        _, _, namespace, version, _ = name.split("/")
        by_namespace.setdefault(namespace, []).append(name)
    found: dict[str, Any] = {}
    missing: dict[str, list[str]] = {}
    for full in sorted(wanted):
        type_, _, version = full.partition("@")
        namespace = type_.split("/")[0].lower()
        candidates = [n for n in by_namespace.get(namespace, []) if n.split("/")[3] == version]
        entry = _find(checkout, candidates, full)
        if entry is not None:
            found[full] = entry
            continue
        # which versions the repository has for this type, to say so in the finding
        versions = [n.split("/")[3] for n in by_namespace.get(namespace, [])
                    if _find(checkout, [n], f"{type_}@{n.split('/')[3]}") is not None]
        missing[full] = sorted(set(versions))
    return {"commit": checkout.commit, "resources": found, "missing": missing}


def _find(checkout: Checkout, names: list[str], full: str) -> dict[str, Any] | None:
    for name in names:
        types = checkout.read(name)
        for t in types:
            if t["$type"] == "ResourceType" and t["name"].lower() == full.lower():
                kept, body = closure(types, int(t["body"]["$ref"][2:]))
                return {"file": name, "name": t["name"], "body": body, "types": kept,
                        "writableScopes": t.get("writableScopes"), "readableScopes": t.get("readableScopes")}
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a checkout of Azure/bicep-types-az (work tree or git dir)")
    parser.add_argument("--rev", default="HEAD", help="the revision of a git directory to read (default HEAD)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where to write it (default {CACHE.name}/)")
    args = parser.parse_args(argv)
    checkout = Checkout(args.checkout, args.rev)
    wanted = used_types(templates())
    content = build(checkout, wanted)
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / CACHE_FILE).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    size = (args.cache / CACHE_FILE).stat().st_size
    print(f"{args.cache / CACHE_FILE}: {len(content['resources'])} resource types from bicep-types-az "
          f"{checkout.commit[:12]} ({size // 1024} KiB); not found: {sorted(content['missing']) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
