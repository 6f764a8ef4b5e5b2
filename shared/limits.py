"""Bounds on what a client can make the server hold: string lengths, error echoes, log bytes.

The body's total size is capped before parsing (``MLOPS_MAX_REQUEST_BYTES``, 413) and its
rows after (``MLOPS_MAX_BATCH_ROWS``). Within those, one string value could still be megabytes
and be copied on into the inference log, and an error message that echoes a field name
could send megabytes back. These checks are C-level passes over values already parsed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import InvalidRequest

if TYPE_CHECKING:
    from shared.serving import Batch

#: Default for ``MLOPS_MAX_STRING_CHARS``: far above any category a model was trained on.
MAX_STRING_CHARS = 256
#: How much of a client's own text an error message may quote back.
MAX_ECHO_CHARS = 200
#: The longest message an error keeps (``shared.errors.MlopsError``), whoever reads it.
MAX_MESSAGE_CHARS = 2000


def check_batch_strings(batch: Batch, max_chars: int) -> None:
    """400 naming the field (and row) when a string value is longer than ``max_chars``."""
    for name, values in batch.strings.items():
        flat = values.ravel()
        if flat.size and max(map(len, flat)) > max_chars:
            row = next(i for i, v in enumerate(flat) if len(v) > max_chars)
            raise InvalidRequest(f"row {row}: field '{name}' is {len(flat[row]):,} characters, over the limit of "
                                 f"{max_chars} (setting MLOPS_MAX_STRING_CHARS)", field=name, row=row)


def check_string(value: Any, field: str, max_chars: int, row: int | None = None) -> None:
    """400 naming ``field`` when ``value`` is a string longer than ``max_chars``."""
    if isinstance(value, str) and len(value) > max_chars:
        where = {"row": row} if row is not None else {}
        raise InvalidRequest(f"field '{field}' is {len(value):,} characters, over the limit of {max_chars} "
                             "(setting MLOPS_MAX_STRING_CHARS)", field=field, **where)


def clip(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """``value`` with any string in it cut to ``limit`` characters (for error bodies)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"... ({len(value):,} characters)"
    if isinstance(value, dict):
        return {clip(k, limit): clip(v, limit) for k, v in list(value.items())[:20]}
    if isinstance(value, (list, tuple)):
        return [clip(v, limit) for v in list(value)[:20]]
    return value


def batch_bytes(batch: Batch) -> int:
    """What one request's rows cost in the inference log's buffer, roughly but from above."""
    size = batch.rows * (4 * len(batch.numeric_names) + 64)  # floats, outputs, ids and times
    for values in batch.strings.values():
        flat = values.ravel()
        size += sum(map(len, flat)) + 56 * flat.size  # characters and each str object's header
    return size
