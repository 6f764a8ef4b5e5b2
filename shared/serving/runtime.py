"""The serving runtime: the per-worker session cache, hot swap, and routing a request to a version.

Each worker loads the production version of a model once, verifying the ONNX file's
SHA-256 against its manifest, and checks the alias with a conditional read at most once
per ``alias_check_seconds``. A request takes a reference to the loaded version at its
start (``ModelServer.route``), so a swap never changes the model under a request in flight,
and every response names the version that answered.

During a rollout's canary step a sticky share of requests goes to the candidate
(``shared.serving.routing``). The rollout's state is read with the alias, by the same
conditional read at most once per interval, never per request; the candidate is loaded and
verified there, off the request path, and gets its share only once it is loaded. In shadow,
production answers every request: the evaluator replays the logged rows through the candidate.

No parsing happens here: the codecs (``shared.serving.protocols``) turn a request into a
``Batch`` and a ``Prediction`` back into a body; ``ModelServer.run`` sits between the two.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from shared.core.errors import MAX_REASON_CHARS, IntegrityError, ModelNotFound, NoProductionVersion, clip_words
from shared.core.records import Manifest, RunStatus
from shared.core.settings import Settings
from shared.core.spec import SpecCatalog
from shared.registry.rollouts import RolloutState, RolloutStore
from shared.registry.runs import explain, outcome_of
from shared.registry.store import Registry
from shared.serving.graph import new_session, with_column_names, with_numeric_block
from shared.serving.protocols.batch import Batch, Prediction, Schema, schema_parts
from shared.serving.routing import Split, salt_of

log = logging.getLogger("mlops.serving")


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, ready to run."""

    model: str
    version: int
    session: Any
    manifest: Manifest
    schema: Schema  # (name, "float" | "string")
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
            assert batch.numeric is not None  # a schema with a block input parses into a numeric block
            feeds[self.block_input] = batch.numeric
        return feeds


@dataclass
class _Entry:
    loaded: LoadedModel | None
    alias_etag: str | None
    #: While there is no production version: when to look again (a cheap negative cache).
    retry_at: float = 0.0
    #: ... and the model's latest run (its status), looked up as often as the alias.
    latest_run: RunStatus | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The rollout's traffic split now (None: production answers every request), and the
    #: rollout state it was built from, read with the alias (conditional, on its ETag).
    split: Split | None = None
    rollout: RolloutState | None = None
    rollout_etag: str | None = None
    #: The split waits for something (a candidate to load): build it again next refresh.
    split_pending: bool = False


def serving_graph(onnx_bytes: bytes, schema: Schema) -> tuple[bytes, str | None]:
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
                 alert=None, latest_run=None, version_cache_size: int = VERSION_CACHE_SIZE) -> None:
        self.alert = alert  # callable(model, kind, detail), e.g. Context.alert
        self.latest_run = latest_run  # callable(model) -> its newest run's status or None, e.g. RunStore.latest
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
        self.rollouts = RolloutStore(registry.storage)

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

    # -- routing -------------------------------------------------------------------------
    def route(self, model: str, version: int | None = None, key: str | None = None) -> LoadedModel:
        """The version that answers one request for ``model``: the one place a request meets a version.

        ``version`` given: that registered version (production's session if it is that one,
        else loaded on demand and verified, see ``get_version``). Otherwise production, or,
        in a rollout's canary step, the candidate for the share of routing keys the step
        gives it: ``key`` is the request's routing key (see ``shared.serving.routing``), and
        the same key gets the same version for the whole step. No key: production. The
        request path does no I/O here: one attribute read and, in a canary step, one hash.
        The caller keeps the returned reference from the start of the request to its end: a
        swap or a step meanwhile does not change the model under it.
        """
        if version is not None:
            return self.get_version(model, version)
        entry = self._entries.get(model)
        if entry is None or entry.loaded is None:
            return self.get(model)  # the first request: production; the split is built off the request path
        loaded = entry.loaded
        split = entry.split
        if split is not None and key is not None and split.takes(key):
            return split.candidate
        return loaded

    def routing_field(self, model: str) -> str | None:
        """The request field the current canary step routes by (the spec's ``[rollout]
        routing_field``), or None: no split now, or none named."""
        entry = self._entries.get(model)
        split = entry.split if entry is not None else None
        return split.routing_field if split is not None else None

    def splits(self) -> dict[str, dict[str, Any]]:
        """The traffic split of each model this worker routes now (for ``GET /api/health``)."""
        out = {}
        for model, entry in list(self._entries.items()):
            split = entry.split
            if split is not None:
                out[model] = {"candidate": split.candidate.version, "candidate_percent": split.percent}
        return out

    def _refresh_split(self, model: str, entry: _Entry, alias_changed: bool, load_candidate: bool) -> None:
        """Read the rollout's state (conditional) and rebuild the split if it or production
        changed. Called with ``entry.lock`` held, off the request path (bar a first request,
        which builds no split that needs a load: ``load_candidate`` False)."""
        changed, state, etag = self.rollouts.read_if_changed(model, entry.rollout_etag)
        if changed:
            entry.rollout, entry.rollout_etag = state, etag
        if not (changed or alias_changed or entry.split_pending):
            return
        entry.split_pending = False
        entry.split = self._split_for(model, entry, entry.rollout, load_candidate)

    def _split_for(self, model: str, entry: _Entry, state: RolloutState | None, load_candidate: bool) -> Split | None:
        production = entry.loaded
        if state is None or production is None or not state.live:
            return None
        percent = float(state.traffic()["candidate_percent"])
        if percent <= 0 or production.version != state.champion:
            # Shadow (production answers all), or production moved: promoted (the candidate is
            # production) or moved by an operator (the rollout is about to end): no split.
            return None
        old = entry.split
        if old is not None and old.candidate.version == state.candidate:
            candidate = old.candidate
        else:
            with self._versions_lock:
                candidate = self._versions.get((model, state.candidate))
            if candidate is None:
                if not load_candidate:
                    entry.split_pending = True
                    return None
                try:
                    candidate = self.get_version(model, state.candidate)  # verified, session built
                except Exception:  # production answers everything until the candidate loads
                    entry.split_pending = True
                    log.exception("%s: could not load candidate v%d; production answers every request",
                                  model, state.candidate)
                    return None
        try:
            field_name = self.specs.get(model).rollout.routing_field
        except Exception:  # a spec gone or broken: route by the caller's key or request id
            field_name = None
        return Split.of(candidate, percent, salt_of(model, state.candidate, state.started_at, state.step), field_name)

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
        self.refresh(model, load_candidate=False)  # on a request's path: no candidate load here
        self._ensure_refresher()
        if entry.loaded is None:
            entry.retry_at = self.clock() + self.settings.alias_check_seconds
            entry.latest_run = self._latest_run(model)
            self._raise_missing(model, entry)
        return entry.loaded

    def _latest_run(self, model: str) -> RunStatus | None:
        if self.latest_run is None:
            return None
        try:
            return self.latest_run(model)
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

    def refresh(self, model: str, *, load_candidate: bool = True) -> bool:
        """Check the alias and the rollout's state (conditional reads), swap in a new production
        version and rebuild the traffic split; True if production was swapped."""
        entry = self._entries[model]
        with entry.lock:
            swapped = self._refresh_alias(model, entry)
            self._refresh_split(model, entry, swapped, load_candidate)
            return swapped

    def _refresh_alias(self, model: str, entry: _Entry) -> bool:
        changed, alias = self.registry.alias_if_changed(model, entry.alias_etag)
        if not changed:
            return False
        old = entry.loaded
        if alias is None:
            entry.loaded, entry.alias_etag = None, None
            return old is not None
        if old is None or old.version != alias.version:
            split = entry.split
            if split is not None and split.candidate.version == alias.version:
                new = split.candidate  # the candidate promoted: already loaded and verified
            else:
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

    def _raise_missing(self, model: str, entry: _Entry) -> NoReturn:
        try:
            self.specs.get(model)
        except ModelNotFound:
            if not self.registry.versions(model):
                raise
        latest = entry.latest_run
        if latest:
            # The whole reason, bounded at a word: the run and what became of it come first, so
            # a long recorded cause (a quarantined dataset's) is shortened, never the sentence.
            # Waiting helps only while a run is in progress (or a promotion is being served).
            outcome = outcome_of(latest)
            lead = f"model {model!r} has no production version; its latest "
            raise NoProductionVersion(lead + clip_words(explain(latest), MAX_REASON_CHARS - len(lead)),
                                      permanent=outcome not in ("running", "promoted"),
                                      run_id=latest.get("run_id"), outcome=outcome)
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

