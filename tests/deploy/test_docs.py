"""The README stays a front page, and the documentation stays true to the code.

``make docs`` (``mkdocs build --strict`` in CI) checks every link between pages; these tests
check what it cannot: the README's length and first commands, its links from the repository's
root, the paths the pages name, and that the generated parts (the settings table, the HTTP API
reference) cover everything the code has.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
from types import ModuleType

from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_a_front_page_that_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    assert lines[2:6] == ["```bash", *lines[3:5], "```"]
    assert lines[3].startswith("make run ") and lines[4].startswith("make test ")
    # the two targets exist as the README says
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run: ", makefile, re.M) and re.search(r"^test: ", makefile, re.M)


def test_every_relative_link_of_the_readme_resolves_from_the_repository_root():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets, "the README links into docs/"
    missing = [t for t in targets if not re.match(r"[a-z]+:", t) and not (ROOT / t).exists()]
    assert missing == []


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = set(re.findall(r":\s+([\w-]+\.md)\s*$", config, re.M))
    assert nav == {p.name for p in PAGES}


def test_every_repository_path_the_pages_name_exists():
    # `shared/...`, `tests/...` and the like in code spans: they move when the code does.
    named = set()
    for page in [ROOT / "README.md", *PAGES]:
        for span in re.findall(r"`([^`\s]+)`", page.read_text()):
            path = span.split(":")[0].rstrip(".,")
            if (re.match(r"(shared|functions|devhost|tests|bench|infra|models|docs)/[\w./-]+$", path)
                    and "<" not in path):
                named.add(path)
    missing = sorted(p for p in named if not (ROOT / p).exists() and not (ROOT / p.rsplit(".", 1)[0]).exists()
                     and not (ROOT / (p.rsplit(".", 1)[0].replace(".", "/") + ".py")).exists())
    assert named and missing == []


def test_the_settings_table_has_every_field_with_its_variable_default_and_description():
    settings_md = hook("settings_md")
    rows = settings_md.rows()
    from shared.core.settings import Settings

    fields = [f.name for f in dataclasses.fields(Settings) if f.compare]
    assert [r.field for r in rows] == fields
    assert [r.field for r in rows if not r.env] == []
    assert [r.field for r in rows if not r.description] == []
    by_field = {r.field: r for r in rows}
    assert by_field["max_batch_rows"].env == ("MLOPS_MAX_BATCH_ROWS",)
    assert by_field["max_batch_rows"].default == "`10000`"
    assert by_field["data_dir"].default == "`.data`"
    assert by_field["max_request_bytes"].default == "`4194304` (4 MiB)"


def test_every_example_setting_is_documented_on_the_settings_page():
    settings_md = hook("settings_md")
    rows = settings_md.rows()
    page = (DOCS / "settings.md").read_text()
    others = settings_md.elsewhere(rows)
    assert "MLOPS_HOST_MASTER_KEY" in others  # read by the local host, not by Settings
    assert "MLOPS_APP_ROLE" not in others  # read through Settings (by the composition): in the table
    assert [key for key in others if f"`{key}`" not in page] == []
    keys = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    documented = {k for r in rows for k in r.env} | set(others)
    assert set(keys) <= documented


def test_the_api_reference_renders_every_operation_of_the_served_document():
    # In a process of its own: the hook builds the worker's context, as the app does.
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {str(DOCS / 'hooks' / 'openapi_md.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "doc = m.served_document()\n"
        "print(json.dumps({'doc': doc, 'md': m.render(doc)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    doc, md = result["doc"], result["md"]
    for path, item in doc["paths"].items():
        for method in item:
            assert f"`{method.upper()} {path}`" in md, (method, path)
    assert "| `wind_power` |" in md and "`turbine_id`" in md  # a model's own paths name its columns
    assert "`x-functions-key`" in md
