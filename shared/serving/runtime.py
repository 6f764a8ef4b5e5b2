"""Serving: the per-worker session cache and the prediction path.

Each worker loads the production version of a model once, verifying the ONNX file's
SHA-256 against its manifest, and checks the alias with a conditional read at most once
per ``alias_check_seconds``. A request takes a reference to the loaded version at its
start, so a swap never changes the model under a request in flight, and every response
names the version that answered.
"""
from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from shared.core.errors import IntegrityError, InvalidRequest, ModelNotFound, NoProductionVersion
from shared.core.settings import Settings
from shared.core.spec import MISSING_CATEGORY, SpecCatalog
from shared.registry.store import Registry
from shared.serving.graph import new_session, with_column_names, with_numeric_block

log = logging.getLogger("mlops.serving")


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
    #: The session input taking the numeric block: the rewritten graph's one input when
    #: there are several numeric columns, the column's own input when there is one.
    block_input: str | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.schema)

    def feeds(self, batch: Batch) -> dict[str, np.ndarray]:
        """The session's inputs for ``batch`` (parsed against this version's schema)."""
        feeds = dict(batch.strings)
        if self.block_input is not None:
            feeds[self.block_input] = batch.numeric
        return feeds


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

    def columns(self) -> dict[str, np.ndarray]:
        """Every column as a 1-D array, numeric first, in schema order."""
        out = {name: self.numeric[:, j] for j, name in enumerate(self.numeric_names)}
        out.update((name, values.ravel()) for name, values in self.strings.items())
        return out


@dataclass
class _Entry:
    loaded: LoadedModel | None
    alias_etag: str | None
    #: While there is no production version: when to look again (a cheap negative cache).
    retry_at: float = 0.0
    #: ... and what became of the model's latest run, looked up as often as the alias.
    latest_run: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def serving_graph(onnx_bytes: bytes, schema: tuple[tuple[str, str], ...]) -> tuple[bytes, str | None]:
    """The graph a server runs for a registered one, and the input its numeric block feeds.

    Several numeric columns are merged into one input (``with_numeric_block``): the same
    computation, fewer arrays to bind per request. One numeric column is fed as it is.
    """
    numeric = schema_parts(schema)[1]
    if len(numeric) > 1:
        return with_numeric_block(onnx_bytes, list(numeric))
    return onnx_bytes, (numeric[0] if numeric else None)


def load_version(registry: Registry, model: str, version: int) -> LoadedModel:
    """Load and verify one version into an ONNX Runtime session."""
    manifest = registry.manifest(model, version)
    data = registry.model_bytes(model, version, manifest)  # SHA-256 checked against the manifest
    schema = tuple((c["name"], c["type"]) for c in manifest["input_schema"])
    data, block_input = serving_graph(with_column_names(data, manifest["input_schema"]), schema)
    classes = manifest.get("classes")
    return LoadedModel(
        model=model,
        version=version,
        session=new_session(data),
        manifest=manifest,
        schema=schema,
        is_classifier=manifest["task"] != "regression",
        classes=tuple(classes) if classes else None,
        block_input=block_input,
    )


class ModelServer:
    """The session cache: which version of each model this worker serves.

    The request path never does I/O once a model is loaded: it reads one attribute. A
    background thread checks every loaded model's alias once per interval with a
    conditional read, loads a new version completely (verified, session built) and then
    swaps the reference, so requests already running keep the version they started with.
    """

    #: How many versions other than production a worker keeps loaded (least recently used out).
    VERSION_CACHE_SIZE = 4

    def __init__(self, registry: Registry, specs: SpecCatalog, settings: Settings, clock=time.monotonic,
                 alert=None, explain=None, version_cache_size: int = VERSION_CACHE_SIZE) -> None:
        self.alert = alert  # callable(model, kind, detail), e.g. Context.alert
        self.explain = explain  # callable(model) -> what became of its latest run, or None
        self.registry = registry
        self.specs = specs
        self.settings = settings
        self.clock = clock
        self.swaps = 0
        self.refresh_errors = 0
        self.on_swap: list[Any] = []  # callbacks(model, old_version, new_version), for logs and tests
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._versions: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._versions_lock = threading.Lock()
        self.version_cache_size = version_cache_size
        self.version_loads = 0

    # -- lifecycle -----------------------------------------------------------------------
    def _ensure_refresher(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._refresh_loop, name="model-refresh", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.settings.alias_check_seconds):
            for model in list(self._entries):
                try:
                    self.refresh(model)
                except Exception:  # keep serving what we have; try again next interval
                    self.refresh_errors += 1
                    log.exception("refreshing %s failed; still serving the loaded version", model)

    # -- the cache -----------------------------------------------------------------------
    def get(self, model: str) -> LoadedModel:
        """The production version of ``model``; loads it on first use."""
        entry = self._entries.get(model)
        if entry is not None:
            loaded = entry.loaded
            if loaded is not None:
                return loaded
            if self.clock() < entry.retry_at:
                self._raise_missing(model, entry)
        with self._lock:
            entry = self._entries.setdefault(model, _Entry(None, None))
        self.refresh(model)
        self._ensure_refresher()
        if entry.loaded is None:
            entry.retry_at = self.clock() + self.settings.alias_check_seconds
            entry.latest_run = self._latest_run(model)
            self._raise_missing(model, entry)
        return entry.loaded

    def _latest_run(self, model: str) -> str | None:
        if self.explain is None:
            return None
        try:
            return self.explain(model)
        except Exception:  # an explanation must not turn a 503 into a 500
            log.exception("could not look up the latest run of %s", model)
            return None

    def get_version(self, model: str, version: int) -> LoadedModel:
        """Any registered version of ``model``: production's session if it is that version, else
        one loaded on demand, verified as production is (SHA-256 against the manifest), and
        kept in a small least-recently-used cache of ``version_cache_size`` entries."""
        entry = self._entries.get(model)
        if entry is not None and entry.loaded is not None and entry.loaded.version == version:
            return entry.loaded
        key = (model, version)
        with self._versions_lock:
            hit = self._versions.get(key)
            if hit is not None:
                self._versions.move_to_end(key)
                return hit
        # Loaded outside the lock: a slow load must not hold up hits on other versions. Two
        # concurrent first requests may both load; the second result replaces the first.
        try:
            loaded = load_version(self.registry, model, version)
        except IntegrityError as exc:
            if self.alert is not None:
                self.alert(model, "integrity", {"version": version, "message": exc.message})
            raise
        with self._versions_lock:
            self.version_loads += 1
            self._versions[key] = loaded
            self._versions.move_to_end(key)
            while len(self._versions) > self.version_cache_size:
                self._versions.popitem(last=False)
        return loaded

    def cached_versions(self) -> list[tuple[str, int]]:
        """The non-production versions held, least recently used first."""
        with self._versions_lock:
            return list(self._versions)

    def refresh(self, model: str) -> bool:
        """Check the alias (conditional read) and swap in a new version; True if swapped."""
        entry = self._entries[model]
        with entry.lock:
            changed, alias = self.registry.alias_if_changed(model, entry.alias_etag)
            if not changed:
                return False
            old = entry.loaded
            if alias is None:
                entry.loaded, entry.alias_etag = None, None
                return old is not None
            if old is None or old.version != alias.version:
                try:
                    new = load_version(self.registry, model, alias.version)  # off the request path
                except IntegrityError as exc:
                    if self.alert is not None:
                        self.alert(model, "integrity", {"version": alias.version, "message": exc.message})
                    raise
                entry.loaded = new  # one reference assignment: the atomic swap
                self.swaps += old is not None
                for callback in self.on_swap:
                    callback(model, old.version if old else None, new.version)
                if old is not None:
                    log.info("%s: now serving version %d (was %d)", model, new.version, old.version)
            entry.alias_etag = alias.etag
            return old is not entry.loaded

    def _raise_missing(self, model: str, entry: _Entry) -> None:
        try:
            self.specs.get(model)
        except ModelNotFound:
            if not self.registry.versions(model):
                raise
        if entry.latest_run:
            raise NoProductionVersion(f"model {model!r} has no production version; its latest {entry.latest_run}")
        raise NoProductionVersion(
            f"model {model!r} has no production version yet; train one by dropping a dataset "
            f"into datasets/{model}/"
        )

    def loaded_versions(self) -> dict[str, int]:
        """Which version of each model this worker has loaded."""
        return {m: e.loaded.version for m, e in list(self._entries.items()) if e.loaded is not None}

    # -- prediction ----------------------------------------------------------------------
    def run(self, loaded: LoadedModel, batch: Batch) -> Prediction:
        """Run ``loaded`` on rows parsed against its schema."""
        outputs = loaded.session.run(None, loaded.feeds(batch))
        if loaded.is_classifier:
            return Prediction(loaded, labels=outputs[0].ravel(), probabilities=outputs[1])
        return Prediction(loaded, values=outputs[0].ravel())

    def predict(self, model: str, payload: Any) -> dict[str, Any]:
        """Parse ``payload``, run the production version, and shape the answer."""
        loaded = self.get(model)
        return self.run(loaded, parse_payload(payload, loaded.schema, self.settings.max_batch_rows)).to_json()


@dataclass
class Prediction:
    """What one version answered for a batch of rows."""

    loaded: LoadedModel
    values: np.ndarray | None = None
    labels: np.ndarray | None = None
    probabilities: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        loaded = self.loaded
        if self.labels is not None:
            classes = [str(c) for c in loaded.classes or range(self.probabilities.shape[1])]
            predictions: list[Any] = [
                {"label": label, "probabilities": dict(zip(classes, p))}
                for label, p in zip(self.labels.tolist(), self.probabilities.tolist())
            ]
        else:
            predictions = self.values.tolist()  # float32 to Python float is exact
        return {"model": loaded.model, "version": loaded.version, "predictions": predictions}


F32_MAX = float(np.finfo(np.float32).max)


# -- payloads --------------------------------------------------------------------------------
@dataclass
class Parsed:
    """One request's values before typing: the numeric ones in one flat list."""

    rows: int
    flat: list  # numeric values, row by row (records) or column by column (columnar)
    row_major: bool
    strings: dict[str, list]


def _diagnose_records(records: list, field_name: str, names: tuple[str, ...]) -> NoReturn:
    """Raise the precise error for the first row that does not fit the schema."""
    expected = set(names)
    for i, row in enumerate(records):
        if not isinstance(row, dict):
            raise InvalidRequest(f"'{field_name}[{i}]' must be an object", field=f"{field_name}[{i}]", row=i)
        missing = [n for n in names if n not in row]
        if missing:
            raise InvalidRequest(f"row {i}: missing field '{missing[0]}'", field=missing[0], row=i)
        extra = sorted(k for k in row if k not in expected)
        if extra:
            raise InvalidRequest(f"row {i}: unexpected field '{extra[0]}'", field=extra[0], row=i)
    raise InvalidRequest(f"'{field_name}' does not match the model's inputs", field=field_name)


def _records(records: Any, field_name: str, names: tuple[str, ...], numeric: tuple[str, ...],
             strings: tuple[str, ...]) -> Parsed:
    if not isinstance(records, list):
        raise InvalidRequest(f"'{field_name}' must be a list of objects, one per row", field=field_name)
    # The common case checked in C: every row an object with as many fields as the schema,
    # so a row that still lacks one surfaces as a KeyError below.
    if not (set(map(type, records)) <= _DICT and set(map(len, records)) <= {len(names)}):
        _diagnose_records(records, field_name, names)
    try:
        flat: list = []
        if len(numeric) == 1:
            flat = [row[numeric[0]] for row in records]
        elif numeric:  # itemgetter and chain keep the per-value work in C
            flat = list(itertools.chain.from_iterable(map(operator.itemgetter(*numeric), records)))
        texts = {n: [row[n] for row in records] for n in strings}
    except KeyError:
        _diagnose_records(records, field_name, names)
    return Parsed(rows=len(records), flat=flat, row_major=True, strings=texts)


def _columnar(inputs: Any, field_name: str, names: tuple[str, ...], numeric: tuple[str, ...],
              strings: tuple[str, ...]) -> Parsed:
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
    return Parsed(
        rows=length or 0,
        flat=list(itertools.chain.from_iterable(columns[n] for n in numeric)),
        row_major=False,
        strings={n: columns[n] for n in strings},
    )


def _split(frame: Any, names: tuple[str, ...], numeric: tuple[str, ...], strings: tuple[str, ...]) -> Parsed:
    if not isinstance(frame, dict) or not isinstance(frame.get("columns"), list) or not isinstance(frame.get("data"), list):
        raise InvalidRequest("'dataframe_split' needs 'columns' and 'data' lists", field="dataframe_split")
    extra = sorted(set(frame) - {"columns", "data", "index"})  # pandas' split orient; the index is ignored
    if extra:
        raise InvalidRequest(f"'dataframe_split' has an unexpected key '{extra[0]}'", field=f"dataframe_split.{extra[0]}")
    if not isinstance(frame.get("index", []), list):
        raise InvalidRequest("'dataframe_split.index' must be a list", field="dataframe_split.index")
    cols = frame["columns"]
    for j, c in enumerate(cols):
        if not isinstance(c, str):  # a list here would be an unhashable dict key below
            raise InvalidRequest(f"'dataframe_split.columns[{j}]' must be a string, not {type(c).__name__}",
                                 field=f"dataframe_split.columns[{j}]")
    records = []
    for i, row in enumerate(frame["data"]):
        if not isinstance(row, list) or len(row) != len(cols):
            raise InvalidRequest(
                f"row {i}: 'dataframe_split.data[{i}]' must be a list of {len(cols)} values",
                field=f"dataframe_split.data[{i}]",
                row=i,
            )
        records.append(dict(zip(cols, row)))
    return _records(records, "dataframe_split", names, numeric, strings)


def _check_number(name: str, i: int, v: Any) -> None:
    # A boolean is 1 or 0, as training reads a boolean column of a dataset.
    if not isinstance(v, (int, float)):
        raise InvalidRequest(f"row {i}: field '{name}' must be a number, not {type(v).__name__}", field=name, row=i)
    if not math.isfinite(v):
        raise InvalidRequest(f"row {i}: field '{name}' must be finite", field=name, row=i)
    if abs(v) > F32_MAX:
        raise InvalidRequest(f"row {i}: field '{name}' is out of float range", field=name, row=i)


#: Up to this many values a request is checked in Python: cheaper than numpy's reductions,
#: which also leave the next ONNX Runtime call measurably slower (caches and state).
_CHECK_IN_PYTHON = 256
_PLAIN_NUMBERS = {float, int}
_STR = {str}
#: What a categorical field takes besides text: integers and booleans, as the text training
#: made of them. Not floats: 20.0 would be "20.0", never the "20" an integer column trained as.
_AS_CATEGORY = {str, int, bool}
_DICT = {dict}


def numeric_block(parsed: Parsed, numeric: tuple[str, ...]) -> np.ndarray:
    """All numeric values as one C-ordered float32 ``[n, k]`` array; null becomes NaN.

    The common case (plain ints and floats, all finite and in float32's range) costs one
    test per value; anything else gets the precise per-value error.
    """
    flat, rows, k = parsed.flat, parsed.rows, len(numeric)

    def check(index: int, v: Any) -> None:
        i, j = divmod(index, k) if parsed.row_major else (index % rows, index // rows)
        _check_number(numeric[j], i, v)

    small = len(flat) <= _CHECK_IN_PYTHON
    if small:
        clean = True
        for v in flat:
            t = type(v)
            # NaN fails the range comparison, as do infinities and values beyond float32.
            if (t is not float and t is not int) or not -F32_MAX <= v <= F32_MAX:
                clean = False
                break
    else:  # the types in C; the range below with two reductions
        clean = set(map(type, flat)) <= _PLAIN_NUMBERS
    if not clean:
        for index, v in enumerate(flat):
            if v is not None:
                check(index, v)
        flat = [math.nan if v is None else v for v in flat]
    try:
        values = np.array(flat, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        for index, v in enumerate(flat):
            check(index, v if abs(v) < 1e308 else math.inf)
        raise
    # min and max propagate NaN, which fails both comparisons.
    if clean and not small and not (-F32_MAX <= values.min() and values.max() <= F32_MAX):
        bad = ~np.isfinite(values) | (np.abs(values) > F32_MAX)
        index = int(np.argmax(bad))
        check(index, float(values[index]))
    block = values.reshape(rows, k) if parsed.row_major else values.reshape(k, rows).T
    return block.astype(np.float32, order="C")


@functools.lru_cache(maxsize=256)
def schema_parts(schema: tuple[tuple[str, str], ...]) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    names = tuple(n for n, _ in schema)
    return names, tuple(n for n, k in schema if k == "float"), tuple(n for n, k in schema if k != "float")


def parse_payload(payload: Any, schema: tuple[tuple[str, str], ...], max_rows: int) -> Batch:
    """Validated rows from any accepted request shape; errors name the field and the row."""
    names, numeric, strings = schema_parts(schema)
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object", field="body")
    keys = [k for k in ("instances", "inputs", "dataframe_records", "dataframe_split") if k in payload]
    if len(keys) != 1:
        raise InvalidRequest(
            "the body must have exactly one of 'instances', 'inputs', 'dataframe_records', 'dataframe_split'",
            field="body",
        )
    key = keys[0]
    value = payload[key]
    # As MLflow's scoring server: 'instances' and 'inputs' each come as records (a list of
    # objects) or as columns (an object of lists); 'dataframe_records' only as records.
    if key == "dataframe_records" or (key != "dataframe_split" and isinstance(value, list)):
        parsed = _records(value, key, names, numeric, strings)
    elif key in ("inputs", "instances"):
        parsed = _columnar(value, key, names, numeric, strings)
    else:
        parsed = _split(payload[key], names, numeric, strings)
    rows = parsed.rows
    if rows == 0:
        raise InvalidRequest(f"'{key}' holds no rows", field=key)
    if rows > max_rows:
        raise InvalidRequest(
            f"'{key}' holds {rows} rows, over the limit of {max_rows} (setting MLOPS_MAX_BATCH_ROWS)",
            field=key,
        )
    block = numeric_block(parsed, numeric) if numeric else None
    texts: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] | None = None
    for name, values in parsed.strings.items():
        if not set(map(type, values)) <= _STR:  # the slow path: nulls, integers, booleans, errors
            for i, v in enumerate(values):
                if v is not None and type(v) not in _AS_CATEGORY:
                    raise InvalidRequest(f"row {i}: field '{name}' must be a string (or an integer or boolean), "
                                         f"not {type(v).__name__}", field=name, row=i)
            nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            if nulls.any():
                missing = missing or {}
                missing[name] = nulls
            # As training reads an integer or boolean category: its text ("20", "True").
            values = [MISSING_CATEGORY if v is None else v if type(v) is str else str(v) for v in values]
        texts[name] = np.array(values, dtype=object).reshape(-1, 1)
    return Batch(numeric, block, texts, rows, missing)


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
