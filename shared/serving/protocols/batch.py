"""The typed values every codec shares: a request's rows (``Batch``) and what a version answered
for them (``Prediction``), with the schema helpers and bounds the codecs check against.

A codec (``native``, ``v2``, ``mlflow``) turns bytes into a ``Batch`` and a ``Prediction`` back
into a body; the runtime (``shared.serving.runtime``) runs a ``Batch`` on a loaded version and
answers a ``Prediction``. Neither side imports the other: they meet here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shared.core.errors import InvalidRequest

#: A model's inputs in order: ``(name, "float" | "string")``, as the manifest records them.
Schema = tuple[tuple[str, str], ...]

#: The largest finite float32: a numeric value beyond it cannot reach the model unchanged.
F32_MAX = float(np.finfo(np.float32).max)


class Served(Protocol):
    """What a codec may know of the version that answers: its identity and its inputs and
    outputs (``shared.serving.runtime.LoadedModel`` is one), never its session or cache."""

    @property
    def model(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def schema(self) -> Schema: ...

    @property
    def is_classifier(self) -> bool: ...

    @property
    def classes(self) -> tuple[Any, ...] | None: ...


@dataclass(slots=True)  # built per request: a frozen dataclass's __init__ is several times slower
class Batch:
    """Parsed, validated rows: numeric columns as one float32 ``[n, k]`` block (C order),
    string columns as object ``[n, 1]`` arrays."""

    numeric_names: tuple[str, ...]
    numeric: np.ndarray | None
    strings: dict[str, np.ndarray]
    rows: int
    #: String columns that held nulls: a boolean mask each, true where the request had null.
    #: The model is fed ``""`` there (as in training); the inference log records the null.
    missing: dict[str, np.ndarray] | None = None
    #: Columns the request carried that the model does not use, when the codec ignores such
    #: columns (MLflow's does, as MLflow's scoring server; the native one refuses them).
    ignored: tuple[str, ...] = ()

    def columns(self) -> dict[str, np.ndarray]:
        """Every column as a 1-D array, numeric first, in schema order."""
        block = self.numeric  # None exactly when the schema has no numeric column
        out = {name: block[:, j] for j, name in enumerate(self.numeric_names)} if block is not None else {}
        out.update((name, values.ravel()) for name, values in self.strings.items())
        return out


@dataclass
class Prediction:
    """What one version answered for a batch of rows."""

    loaded: Served
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None


@functools.lru_cache(maxsize=256)
def schema_parts(schema: Schema) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``schema``'s names: all of them, the numeric ones and the string ones, each in order."""
    names = tuple(n for n, _ in schema)
    return names, tuple(n for n, k in schema if k == "float"), tuple(n for n, k in schema if k != "float")


def check_batch_strings(batch: Batch, max_chars: int) -> None:
    """400 naming the field (and row) when a string value is longer than ``max_chars``."""
    for name, values in batch.strings.items():
        flat = values.ravel()
        if flat.size and max(map(len, flat)) > max_chars:
            row = next(i for i, v in enumerate(flat) if len(v) > max_chars)
            raise InvalidRequest(f"row {row}: field '{name}' is {len(flat[row]):,} characters, over the limit of "
                                 f"{max_chars} (setting MLOPS_MAX_STRING_CHARS)", field=name, row=row)


def batch_bytes(batch: Batch) -> int:
    """What one request's rows cost in the inference log's buffer, roughly but from above."""
    size = batch.rows * (4 * len(batch.numeric_names) + 64)  # floats, outputs, ids and times
    for values in batch.strings.values():
        flat = values.ravel()
        size += sum(map(len, flat)) + 56 * flat.size  # characters and each str object's header
    return size
