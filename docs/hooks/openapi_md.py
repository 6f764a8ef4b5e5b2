"""MkDocs hook: the HTTP API page rendered from the OpenAPI document the app serves.

The document is fetched the way a client gets it: the ``openapi`` HTTP function of
``function_app`` is called with a real ``GET /api/openapi.json`` request (on a throw-away
data folder), so the page says what ``GET /api/openapi.json`` says, and nothing is copied by
hand. ``<!-- openapi -->`` in a page becomes the rendered reference, and the document itself
is published beside the pages as ``openapi.json``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- openapi -->"
METHODS = ("get", "put", "post", "delete", "patch")
_document: dict[str, Any] | None = None


def served_document() -> dict[str, Any]:
    """The OpenAPI document as ``GET /api/openapi.json`` answers it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    data_dir = tempfile.mkdtemp(prefix="mlops-docs-")
    saved = os.environ.get("MLOPS_DATA_DIR")
    os.environ["MLOPS_DATA_DIR"] = data_dir  # the worker's context opens its storage here
    try:
        import azure.functions as func

        import function_app

        [fn] = [f for f in function_app.app.get_functions() if f.get_function_name() == "openapi"]
        response = fn.get_user_function()(func.HttpRequest(method="GET", url="/api/openapi.json", body=b""))
        if response.status_code != 200:
            raise RuntimeError(f"GET /api/openapi.json answered {response.status_code}: {response.get_body()[:200]!r}")
        return json.loads(response.get_body())
    finally:
        if saved is None:
            os.environ.pop("MLOPS_DATA_DIR", None)
        else:
            os.environ["MLOPS_DATA_DIR"] = saved
        shutil.rmtree(data_dir, ignore_errors=True)


def _text(text: str) -> str:
    """A docstring's text as Markdown: one line, reST double backticks as code."""
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(str(text).split()))


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped."""
    return _text(text).replace("|", "\\|")


def _type(schema: dict[str, Any]) -> str:
    """A short, readable type for a schema: ``array (1-10000) of object``, ``string ^[a-z]...$``."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            kinds = dict.fromkeys(_type(s) for s in schema[key])
            out = " or ".join(kinds)
            return out + (" or null" if schema.get("nullable") else "")
    kind = schema.get("type", "any")
    if kind == "array":
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        count = (f"{lo}-{hi}" if lo is not None and hi is not None else f"at least {lo}" if lo is not None
                 else f"at most {hi}" if hi is not None else "")
        out = "array" + (f" ({count} items)" if count else "")
        return out + (f" of {_type(schema['items'])}" if "items" in schema else "")
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if kind == "object" and 0 < len(schema.get("properties", {})) <= 8:
        required = set(schema.get("required", ()))
        return "{" + ", ".join(k + ("" if k in required else "?") for k in schema["properties"]) + "}"
    if kind in ("integer", "number") and ("minimum" in schema or "maximum" in schema):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None and abs(lo) < 1e9 and abs(hi) < 1e9:
            kind += f" ({lo}-{hi})"
    if "pattern" in schema:
        kind += f" `{schema['pattern']}`"
    return kind + (" or null" if schema.get("nullable") else "")


def _body_lines(body: dict[str, Any]) -> list[str]:
    lines = []
    for content_type, media in body.get("content", {}).items():
        schema = media.get("schema", {})
        forms = [s.get("required", []) for s in schema.get("oneOf", [])]
        if forms and all(len(f) == 1 for f in forms):
            names = ", ".join(f"`{f[0]}`" for f in forms)
            lines.append(f"- `{content_type}`: one of the forms {names}")
        elif schema.get("properties"):
            required = set(schema.get("required", ()))
            fields = ", ".join(f"`{k}`{'' if k in required else ' (optional)'}: {_type(v)}"
                               for k, v in schema["properties"].items())
            lines.append(f"- `{content_type}`: an object of {fields}")
        else:
            lines.append(f"- `{content_type}`" + (f": {_type(schema)}" if schema else ""))
    return lines


def _auth(operation: dict[str, Any], schemes: dict[str, Any]) -> str:
    keys = [schemes[name] for option in operation.get("security", []) for name in option]
    if not keys:
        return "none"
    return " or ".join(f"key in the {k['in']} `{k['name']}`" for k in keys)


def _models_of(path: str, generic: set[str]) -> tuple[str, str] | None:
    """``(model, generic path)`` when ``path`` is a known model's own copy of a generic path."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if part and "{" not in part:
            candidate = "/".join([*parts[:i], "{name}", *parts[i + 1:]])
            if candidate in generic:
                return part, candidate
    return None


def _model_inputs(operation: dict[str, Any]) -> str:
    """The columns (or v2 tensor names) a model's own path requires, read from its body schema."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and node.get("additionalProperties") is False and "required" in node
                    and len(node["required"]) > len(names) and "request_id" not in node["required"]):
                names[:] = node["required"]
            name = node.get("properties", {}).get("name", {})
            if isinstance(name, dict) and len(name.get("enum", ())) == 1 and name["enum"][0] not in names:
                names.append(name["enum"][0])
            for key, value in node.items():
                if key != "outputs":  # requested outputs are named too; they are not inputs
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(operation.get("requestBody", {}))
    return ", ".join(f"`{n}`" for n in names)


def render(doc: dict[str, Any]) -> str:
    """The document as Markdown: one section per route, then each known model's own paths."""
    schemes = doc.get("components", {}).get("securitySchemes", {})
    base = doc.get("servers", [{}])[0].get("url", "")
    generic = {p for p in doc["paths"] if not _models_of(p, set(doc["paths"]) - {p})}
    out = [f"OpenAPI {doc['openapi']}, *{doc['info']['title']}* {doc['info']['version']}. "
           f"Every path is under `{base}`. The document itself: [openapi.json](openapi.json).", ""]
    if doc["info"].get("description"):
        out += [_text(doc["info"]["description"]), ""]
    per_model: dict[str, tuple[list[str], str]] = {}
    for path, item in doc["paths"].items():
        for method in (m for m in METHODS if m in item):
            operation = item[method]
            owner = _models_of(path, generic - {path})
            if owner:
                paths, inputs = per_model.setdefault(owner[0], ([], _model_inputs(operation)))
                paths.append(f"`{method.upper()} {path}`")
                continue
            out += [f"### `{method.upper()} {path}`", "", _text(operation.get("summary", "")), "",
                    f"**Auth:** {_auth(operation, schemes)}.", ""]
            params = operation.get("parameters", [])
            if params:
                out += ["| parameter | in | required | type |", "|---|---|---|---|"]
                out += [f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                        f"{_type(p.get('schema', {}))} |" for p in params]
                out.append("")
            if "requestBody" in operation:
                out += ["**Body:**", "", *_body_lines(operation["requestBody"]), ""]
            out += ["| status | means | content |", "|---|---|---|"]
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                shapes = ", ".join(f"`{t}`" + (f" ({_type(m['schema'])})" if m.get("schema") else "")
                                   for t, m in content.items())
                out.append(f"| {status} | {_cell(response.get('description', ''))} | {shapes} |")
            out.append("")
    if per_model:
        out += ["### Each model's own paths", "",
                "Each known model also has its own copy of the prediction paths, whose bodies require exactly its "
                "columns (or v2 tensors), so a schema-driven client or fuzzer knows them:", "",
                "| model | paths | columns its bodies require |", "|---|---|---|",
                *(f"| `{model}` | {'<br>'.join(paths)} | {inputs} |"
                  for model, (paths, inputs) in per_model.items()), ""]
    errors = doc.get("components", {}).get("schemas", {})
    if errors:
        out += ["### Error bodies", "", "| schema | shape |", "|---|---|"]
        out += [f"| `{name}` | `{json.dumps(schema, separators=(',', ':'))}` |" for name, schema in errors.items()]
        out.append("")
    return "\n".join(out)


def document() -> dict[str, Any]:
    """The served document, fetched once per build."""
    global _document
    if _document is None:
        _document = served_document()
    return _document


def on_files(files: Any, config: Any) -> Any:
    """Publish the document beside the pages, so the page's link to it resolves."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, "openapi.json", content=json.dumps(document(), indent=2)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the rendered reference."""
    return markdown.replace(MARKER, render(document())) if MARKER in markdown else markdown
