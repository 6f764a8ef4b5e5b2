"""MkDocs hook: the README is the site's front page.

``<!-- readme -->`` in a page becomes ``README.md`` with its links into ``docs/`` made relative
to the site (``docs/architecture.md`` -> ``architecture.md``), so the front page on GitHub and
on the site is one text, and ``mkdocs build --strict`` checks the README's links too.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme -->"


def front_page() -> str:
    """The README as a page of the site."""
    return re.sub(r"\]\(docs/", "](", (ROOT / "README.md").read_text())


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the README."""
    return markdown.replace(MARKER, front_page()) if MARKER in markdown else markdown
