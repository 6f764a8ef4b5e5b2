"""Bounds on what a client can make the server hold: string lengths, error echoes, log bytes.

The body's total size is capped before parsing (``MLOPS_MAX_REQUEST_BYTES``, 413) and its
rows after (``MLOPS_MAX_BATCH_ROWS``). Within those, one string value could still be megabytes
and be copied on into the inference log, and an error message that echoes a field name
could send megabytes back. These checks are C-level passes over values already parsed.
"""
from __future__ import annotations

from typing import Any

from shared.core.errors import InvalidRequest

#: Default for ``MLOPS_MAX_STRING_CHARS``: far above any category a model was trained on.
MAX_STRING_CHARS = 256
#: How many reports a model's monitoring history keeps, so the most a listing can ask for.
REPORT_HISTORY = 100


def check_string(value: Any, field: str, max_chars: int, row: int | None = None) -> None:
    """400 naming ``field`` when ``value`` is a string longer than ``max_chars``."""
    if isinstance(value, str) and len(value) > max_chars:
        where = {"row": row} if row is not None else {}
        raise InvalidRequest(f"field '{field}' is {len(value):,} characters, over the limit of {max_chars} "
                             "(setting MLOPS_MAX_STRING_CHARS)", field=field, **where)
