"""The model console: one self-contained HTML page (styles and script inline, no network
beyond this API), served at ``GET /api/console``."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def page() -> bytes:
    """The console page's bytes (read once per worker)."""
    return (Path(__file__).parent / "index.html").read_bytes()
