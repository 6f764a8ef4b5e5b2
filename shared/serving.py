"""Serving: the per-worker session cache and the prediction path.

Each worker loads the production version of a model once, verifying the ONNX file's
SHA-256 against its manifest, and checks the alias with a conditional read at most once
per ``alias_check_seconds``. A request takes a reference to the loaded version at its
start, so a swap never changes the model under a request in flight, and every response
names the version that answered.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InvalidRequest, ModelNotFound, NoProductionVersion, NotFound
from shared.onnx_model import new_session
from shared.registry import PRODUCTION, Registry
from shared.settings import Settings
from shared.spec import SpecCatalog


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to run."""

    model: str
    version: int
    session: Any
    manifest: dict[str, Any]
    schema: tuple[tuple[str, str], ...]  # (name, "float" | "string")
    is_classifier: bool
    classes: tuple[Any, ...] | None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.schema)


@dataclass
class _Entry:
    loaded: LoadedModel | None
    alias_etag: str | None
    next_check: float
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_version(registry: Registry, model: str, version: int) -> LoadedModel:
    """Load and verify one version into an ONNX Runtime session."""
    manifest = registry.manifest(model, version)
    data = registry.model_bytes(model, version, manifest)
    classes = manifest.get("classes")
    return LoadedModel(
        model=model,
        version=version,
        session=new_session(data),
        manifest=manifest,
        schema=tuple((c["name"], c["type"]) for c in manifest["input_schema"]),
        is_classifier=manifest["task"] != "regression",
        classes=tuple(classes) if classes else None,
    )


class ModelServer:
    """The session cache: which version of each model this worker serves."""

    def __init__(self, registry: Registry, specs: SpecCatalog, settings: Settings, clock=time.monotonic) -> None:
        self.registry = registry
        self.specs = specs
        self.settings = settings
        self.clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def _entry(self, model: str) -> _Entry:
        entry = self._entries.get(model)
        if entry is None:
            with self._lock:
                entry = self._entries.setdefault(model, _Entry(None, None, 0.0))
        return entry

    def get(self, model: str) -> LoadedModel:
        """The production version of ``model``, refreshed at most once per check interval."""
        entry = self._entry(model)
        now = self.clock()
        if entry.loaded is not None and now < entry.next_check:
            return entry.loaded
        with entry.lock:
            if entry.loaded is not None and self.clock() < entry.next_check:
                return entry.loaded
            changed, alias = self.registry.alias_if_changed(model, entry.alias_etag)
            if changed and alias is not None and (entry.loaded is None or entry.loaded.version != alias.version):
                entry.loaded = load_version(self.registry, model, alias.version)
            if changed:
                entry.alias_etag = alias.etag if alias else None
                if alias is None:
                    entry.loaded = None
            entry.next_check = self.clock() + self.settings.alias_check_seconds
            if entry.loaded is None:
                self._raise_missing(model)
            return entry.loaded

    def _raise_missing(self, model: str) -> None:
        try:
            self.specs.get(model)
        except ModelNotFound:
            if not self.registry.versions(model):
                raise
        raise NoProductionVersion(
            f"model {model!r} has no production version yet; train one by dropping a dataset "
            f"into datasets/{model}/"
        )

    def loaded_versions(self) -> dict[str, int]:
        """Which version of each model this worker has loaded."""
        return {m: e.loaded.version for m, e in list(self._entries.items()) if e.loaded is not None}

    def predict(self, model: str, payload: Any) -> dict[str, Any]:
        """Parse ``payload``, run the production version, and shape the answer."""
        loaded = self.get(model)
        feeds, rows = parse_payload(payload, loaded.schema, self.settings.max_batch_rows)
        outputs = loaded.session.run(None, feeds)
        if loaded.is_classifier:
            labels = outputs[0].ravel().tolist()
            probs = outputs[1].tolist()
            classes = [str(c) for c in loaded.classes or range(len(probs[0]))]
            predictions = [
                {"label": label, "probabilities": dict(zip(classes, p))} for label, p in zip(labels, probs)
            ]
        else:
            predictions = outputs[0].ravel().astype(np.float64).tolist()
        return {"model": model, "version": loaded.version, "predictions": predictions}


# -- payloads --------------------------------------------------------------------------------
def _records_to_columns(records: Any, field_name: str, names: tuple[str, ...]) -> dict[str, list]:
    if not isinstance(records, list):
        raise InvalidRequest(f"'{field_name}' must be a list of objects, one per row", field=field_name)
    columns: dict[str, list] = {n: [] for n in names}
    expected = set(names)
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InvalidRequest(f"'{field_name}[{i}]' must be an object", field=f"{field_name}[{i}]", row=i)
        if row.keys() != expected:
            missing = [n for n in names if n not in row]
            if missing:
                raise InvalidRequest(
                    f"row {i}: missing field '{missing[0]}'", field=missing[0], row=i
                )
            extra = sorted(k for k in row if k not in expected)
            raise InvalidRequest(f"row {i}: unexpected field '{extra[0]}'", field=extra[0], row=i)
        for n in names:
            columns[n].append(row[n])
    return columns


def _columnar(inputs: Any, field_name: str, names: tuple[str, ...]) -> dict[str, list]:
    if not isinstance(inputs, dict):
        raise InvalidRequest(f"'{field_name}' must be an object of columns", field=field_name)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise InvalidRequest(f"missing field '{missing[0]}'", field=missing[0])
    extra = sorted(k for k in inputs if k not in names)
    if extra:
        raise InvalidRequest(f"unexpected field '{extra[0]}'", field=extra[0])
    columns = {}
    length = None
    for n in names:
        values = inputs[n]
        if not isinstance(values, list):
            values = [values]
        if length is None:
            length = len(values)
        elif len(values) != length:
            raise InvalidRequest(
                f"field '{n}' has {len(values)} values but '{names[0]}' has {length}", field=n
            )
        columns[n] = values
    return columns


def _split(frame: Any, names: tuple[str, ...]) -> dict[str, list]:
    if not isinstance(frame, dict) or not isinstance(frame.get("columns"), list) or not isinstance(frame.get("data"), list):
        raise InvalidRequest("'dataframe_split' needs 'columns' and 'data' lists", field="dataframe_split")
    cols = frame["columns"]
    records = []
    for i, row in enumerate(frame["data"]):
        if not isinstance(row, list) or len(row) != len(cols):
            raise InvalidRequest(
                f"row {i}: 'dataframe_split.data[{i}]' must be a list of {len(cols)} values",
                field=f"dataframe_split.data[{i}]",
                row=i,
            )
        records.append(dict(zip(cols, row)))
    return _records_to_columns(records, "dataframe_split", names)


def parse_payload(payload: Any, schema: tuple[tuple[str, str], ...], max_rows: int) -> tuple[dict[str, np.ndarray], int]:
    """ONNX feeds from any accepted request shape; errors name the field and the row."""
    names = tuple(n for n, _ in schema)
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    keys = [k for k in ("instances", "inputs", "dataframe_records", "dataframe_split") if k in payload]
    if len(keys) != 1:
        raise InvalidRequest(
            "the body must have exactly one of 'instances', 'inputs', 'dataframe_records', 'dataframe_split'",
            field="body",
        )
    key = keys[0]
    if key in ("instances", "dataframe_records"):
        columns = _records_to_columns(payload[key], key, names)
    elif key == "inputs":
        columns = _columnar(payload[key], key, names)
    else:
        columns = _split(payload[key], names)
    rows = len(columns[names[0]]) if names else 0
    if rows == 0:
        raise InvalidRequest(f"'{key}' holds no rows", field=key)
    if rows > max_rows:
        raise InvalidRequest(
            f"'{key}' holds {rows} rows, over the limit of {max_rows} (setting MLOPS_MAX_BATCH_ROWS)",
            field=key,
        )
    feeds = {}
    for name, kind in schema:
        values = columns[name]
        if kind == "float":
            for i, v in enumerate(values):
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InvalidRequest(f"row {i}: field '{name}' must be a number, not {type(v).__name__}", field=name, row=i)
                if not math.isfinite(v):
                    raise InvalidRequest(f"row {i}: field '{name}' must be finite", field=name, row=i)
            arr = np.array([math.nan if v is None else v for v in values], dtype=np.float32)
            if not np.isfinite(arr[~np.isnan(arr)]).all():
                i = int(np.argmax(np.isinf(arr)))
                raise InvalidRequest(f"row {i}: field '{name}' is out of float range", field=name, row=i)
            feeds[name] = arr.reshape(-1, 1)
        else:
            for i, v in enumerate(values):
                if v is not None and not isinstance(v, str):
                    raise InvalidRequest(f"row {i}: field '{name}' must be a string, not {type(v).__name__}", field=name, row=i)
            feeds[name] = np.array(["" if v is None else v for v in values], dtype=object).reshape(-1, 1)
    return feeds, rows
