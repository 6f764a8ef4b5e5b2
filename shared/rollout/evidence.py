"""A rollout step's evidence, from the shared truth: the inference log and feedback of every
instance, never per-instance counters.

* **Canary** rows are those the candidate answered (the log's ``version`` column) against those
  production answered in the same window: error shares and p99 latency as served.
* **Shadow** costs nothing on the request path: the evaluator replays production's logged rows
  through the candidate's ONNX session. The latency guardrail then compares the two versions'
  compute time on the same requests, replayed one request at a time, interleaved.
* **Pairs**: every sampled row is scored by the version that did not answer it, so both
  versions' predictions on the same rows give the divergence and the output PSI; labelled rows
  (feedback joined on ``(request_id, row)``, one item per row) give both versions' live metric
  on the same rows and the per-row losses for the paired sign test.

Bounded: the log is read column by column with Arrow, filtered in C, and at most
``max_replay_rows`` rows (a seeded uniform sample) plus ``max_labelled_rows`` labelled rows
are turned into Python values or replayed; 1M logged rows evaluate in well under 2 s
(``bench/rollout.py``).

The inference log's optional ``error`` column (the request path's part of the rollout writes
it): a string error code on a row whose request failed in its version (a 5xx or a run
failure; never a client's 4xx), null on a row that was answered. A log without the column
has no errors.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.core.spec import MISSING_CATEGORY, ModelSpec
from shared.monitoring.drift import bin_counts, psi
from shared.pipeline.train import compute_metrics
from shared.policies.rollout import RolloutEvidence, latency_breached
from shared.ports.storage import Storage
from shared.registry.rollouts import RolloutState
from shared.serving.feedback import first_per_row, read_feedback
from shared.serving.inference_log import CONTAINER as LOG_CONTAINER
from shared.serving.inference_log import hours_between, written_at
from shared.serving.protocols.batch import Batch
from shared.serving.runtime import LoadedModel

log = logging.getLogger("mlops.rollout")

ERROR_COLUMN = "error"
MAX_REPLAY_ROWS = 20_000
MAX_LABELLED_ROWS = 200_000
LATENCY_REQUESTS = 100
_CHUNK = 50_000
_BASE = ("request_id", "row", "time", "version", "latency_ms", "prediction")


def read_window(storage: Storage, model: str, since: float, until: float, columns: list[str]):
    """The log of ``model`` with a request time in [since, until), as one Arrow table of
    ``columns`` (those a part lacks are null); None when there are no rows."""
    tables = []
    for hour in hours_between(since, until):
        for blob in storage.list(LOG_CONTAINER, f"{model}/{hour}/"):
            if written_at(blob.name) < since:  # written before the window began: none of its rows
                continue
            pf = pq.ParquetFile(io.BytesIO(storage.get(LOG_CONTAINER, blob.name).data))
            have = [c for c in columns if c in pf.schema_arrow.names]
            table = pf.read(columns=have)
            for c in columns:
                if c not in have:
                    table = table.append_column(c, pa.nulls(table.num_rows))  # null-typed: any type promotes it
            tables.append(table.select(columns))
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    t = table.column("time")
    lo = pa.scalar(int(since * 1e6), pa.timestamp("us", tz="UTC"))
    hi = pa.scalar(int(until * 1e6), pa.timestamp("us", tz="UTC"))
    table = table.filter(pc.and_(pc.greater_equal(t, lo), pc.less(t, hi)))
    return table if table.num_rows else None


def read_feedback_table(storage: Storage, model: str, since: float, until: float):
    """Feedback received in [since, until], one item per ``(request_id, row)`` (the first)."""
    frame = first_per_row(read_feedback(storage, model, since, until))
    if frame.empty:
        return frame
    return frame[["request_id", "row", "truth"]]


@dataclass
class _Scored:
    """Both versions' outputs on the same rows."""
    cand: Any  # regression values, or labels
    prod: Any
    cand_proba: np.ndarray | None = None
    prod_proba: np.ndarray | None = None


def log_feeds(loaded: LoadedModel, table) -> dict[str, np.ndarray]:
    """Session inputs for logged rows: the numeric block in float32 (as served and logged),
    strings with a logged null fed as the missing category (as served)."""
    numeric, strings = [], {}
    for name, kind in loaded.schema:
        if name not in table.column_names:
            raise KeyError(name)
        if kind == "float":
            numeric.append(name)
    block = None
    if numeric:
        block = np.column_stack([table.column(n).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
                                 for n in numeric])
    for name, kind in loaded.schema:
        if kind != "float":
            values = table.column(name).fill_null(MISSING_CATEGORY).to_numpy(zero_copy_only=False)
            strings[name] = values.astype(object).reshape(-1, 1)
    batch = Batch(tuple(numeric), np.ascontiguousarray(block) if block is not None else None, strings,
                  table.num_rows)
    return loaded.feeds(batch)


def _run(loaded: LoadedModel, table) -> tuple[np.ndarray, np.ndarray | None]:
    """``loaded`` on every row of ``table``, in chunks: values (or labels as text), probabilities."""
    outs, probas = [], []
    for start in range(0, table.num_rows, _CHUNK):
        result = loaded.session.run(None, log_feeds(loaded, table.slice(start, _CHUNK)))
        if loaded.is_classifier:
            outs.append(result[0].ravel().astype(str))
            probas.append(np.asarray(result[1], dtype=np.float64))
        else:
            outs.append(result[0].ravel().astype(np.float64))
    return np.concatenate(outs), (np.concatenate(probas) if probas else None)


def _logged(table, loaded: LoadedModel) -> tuple[np.ndarray, np.ndarray | None]:
    """The outputs the answering version logged for ``table``'s rows."""
    if not loaded.is_classifier:
        return table.column("prediction").to_numpy(zero_copy_only=False).astype(np.float64), None
    labels = np.asarray(table.column("prediction").to_pylist(), dtype=str)
    classes = [str(c) for c in loaded.classes or ()]
    cols = [f"proba_{c}" for c in classes]
    if classes and all(c in table.column_names for c in cols):
        proba = np.column_stack([table.column(c).to_numpy(zero_copy_only=False) for c in cols]).astype(np.float64)
    else:
        proba = None
    return labels, proba


def _pairs(table, answered_by_candidate: np.ndarray, prod: LoadedModel, cand: LoadedModel) -> _Scored:
    """Both versions' outputs on ``table``: the logged one of the version that answered, the
    other replayed."""
    n = table.num_rows
    if prod.is_classifier:
        c_out, p_out = np.empty(n, dtype=object), np.empty(n, dtype=object)
    else:
        c_out, p_out = np.empty(n), np.empty(n)
    c_proba = p_proba = None
    for by_cand, logged_into, replay, replay_into in ((False, "prod", cand, "cand"), (True, "cand", prod, "prod")):
        idx = np.flatnonzero(answered_by_candidate == by_cand)
        if not len(idx):
            continue
        part = table.take(pa.array(idx))
        logged_values, logged_proba = _logged(part, cand if by_cand else prod)
        values, proba = _run(replay, part)
        for which, v, pr in ((logged_into, logged_values, logged_proba), (replay_into, values, proba)):
            (c_out if which == "cand" else p_out)[idx] = v
            if pr is not None:
                if which == "cand":
                    c_proba = np.full((n, pr.shape[1]), np.nan) if c_proba is None else c_proba
                    c_proba[idx] = pr
                else:
                    p_proba = np.full((n, pr.shape[1]), np.nan) if p_proba is None else p_proba
                    p_proba[idx] = pr
    return _Scored(c_out, p_out, c_proba, p_proba)


def divergence(cand_out: np.ndarray, prod_out: np.ndarray, is_classifier: bool,
               reference_std: float = 0.0) -> tuple[float | None, float | None]:
    """``(divergence, output PSI)`` of the candidate's outputs against production's on the same rows.

    Regression: mean absolute difference over the standard deviation of production's
    predictions, PSI on production's decile bins; classification: the share of rows given
    another label, PSI of the label shares. A row production gave no number for (inf or NaN: a
    linear model's output overflows float32 on a row of 1e38s, which any caller can send) is
    left out: one such row made the figure inf, a breach whatever the candidate. A candidate
    giving no number where production gave one diverges (inf). The scale is never below
    ``reference_std``, the spread of production's hold-out predictions: a caller posting one
    row 40,000 times made the window's spread next to nothing and any difference a breach.
    """
    n = len(prod_out)
    if n == 0:
        return None, None
    if is_classifier:
        cand, prod = cand_out.astype(str), prod_out.astype(str)
        labels = np.union1d(cand, prod)
        p_counts = np.array([(prod == v).sum() for v in labels], dtype=np.float64)
        c_counts = np.array([(cand == v).sum() for v in labels], dtype=np.float64)
        return float((cand != prod).mean()), psi(p_counts / n, c_counts)
    cand, prod = cand_out.astype(np.float64), prod_out.astype(np.float64)
    answered = np.isfinite(prod)
    cand, prod = cand[answered], prod[answered]
    n = len(prod)
    if n == 0:
        return None, None
    if not np.isfinite(cand).all():
        return float("inf"), float("inf")
    scale = max(float(prod.std()), reference_std)
    mad = float(np.abs(cand - prod).mean())
    div = mad / scale if scale > 0 else (0.0 if mad == 0 else float("inf"))
    edges = np.unique(np.quantile(prod, np.linspace(0, 1, 11)))
    if len(edges) < 3:  # production answers (almost) one value: PSI is the share that differs
        return div, psi(np.array([1.0, 0.0]), np.bincount((~np.isclose(cand, edges[0])).astype(int), minlength=2))
    return div, psi(bin_counts(prod, edges) / n, bin_counts(cand, edges))


def _losses(spec: ModelSpec, truth: np.ndarray, out: np.ndarray, proba: np.ndarray | None,
            classes: list[str]) -> np.ndarray:
    """Per-row losses for the paired test: absolute error (regression); one minus the
    probability given to the true class (classification; 0/1 without probabilities)."""
    if not spec.is_classifier:
        return np.abs(truth.astype(np.float64) - out.astype(np.float64))
    if proba is None or not classes:
        return (out.astype(str) != truth.astype(str)).astype(np.float64)
    where = {c: i for i, c in enumerate(classes)}
    idx = np.array([where.get(t, -1) for t in truth.astype(str)])
    got = np.where(idx >= 0, proba[np.arange(len(idx)), np.maximum(idx, 0)], 0.0)
    return 1.0 - got


def _metrics(spec: ModelSpec, truth: np.ndarray, out: np.ndarray, proba: np.ndarray | None,
             classes: list[str]) -> float | None:

    try:
        if spec.is_classifier:
            use = proba if proba is not None and not np.isnan(proba).any() else None
            got = compute_metrics(spec, truth.astype(str), out.astype(str), use, np.array(classes) if classes else None)
        else:
            got = compute_metrics(spec, truth.astype(np.float64), out.astype(np.float64))
    except ValueError:  # e.g. one class among the labelled rows: ROC AUC undefined
        return None
    return got.get(spec.metric)


def _p99(values: np.ndarray) -> float | None:
    return float(np.percentile(values, 99)) if len(values) else None


def request_sizes(row: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The rows each request carried, for the requests whose row 0 ``first`` marks. A request's
    rows are logged together, in order (one record), so its last row is the one before the next
    request's row 0: O(n) in numpy, where counting request ids took 0.56 s for 1,000,000 rows."""
    starts = np.flatnonzero(row == 0)
    ends = np.r_[starts[1:], len(row)]
    sizes = row[ends - 1] + 1
    return sizes[first[starts]]


def size_class(sizes: np.ndarray) -> np.ndarray:
    """Requests of like sizes: 1 row, 2-3, 4-7, ... (powers of two)."""
    return np.floor(np.log2(np.maximum(sizes, 1))).astype(np.int64)


def _weighted_p99(values: np.ndarray, weights: np.ndarray) -> float | None:
    if not len(values):
        return None
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][min(int(np.searchsorted(cum, 0.99 * cum[-1])), len(values) - 1)])


def matched_p99(c_lat: np.ndarray, c_cls: np.ndarray, p_lat: np.ndarray, p_cls: np.ndarray
                ) -> tuple[float | None, float | None, int, int, int]:
    """Both versions' p99 latency over requests of like sizes: only the size classes both
    answered, each version's requests weighted to the classes' pooled shares (a routing key is
    sticky, so one caller posting big batches lands on one version). Returns the two p99s, the
    requests behind each, and the requests left out (of a size the other version did not answer)."""
    common = np.intersect1d(c_cls, p_cls)
    keep_c, keep_p = np.isin(c_cls, common), np.isin(p_cls, common)
    left_out = int((~keep_c).sum() + (~keep_p).sum())
    c_lat, c_cls, p_lat, p_cls = c_lat[keep_c], c_cls[keep_c], p_lat[keep_p], p_cls[keep_p]
    if len(common) <= 1:
        return _p99(c_lat), _p99(p_lat), len(c_lat), len(p_lat), left_out
    c_n = np.array([(c_cls == k).sum() for k in common], dtype=np.float64)
    p_n = np.array([(p_cls == k).sum() for k in common], dtype=np.float64)
    pooled = (c_n + p_n) / (c_n.sum() + p_n.sum())

    def weights(cls: np.ndarray, n: np.ndarray) -> np.ndarray:
        return (pooled / (n / n.sum()))[np.searchsorted(common, cls)]

    return (_weighted_p99(c_lat, weights(c_cls, c_n)), _weighted_p99(p_lat, weights(p_cls, p_n)),
            len(c_lat), len(p_lat), left_out)


def _replayed_latency(table, prod: LoadedModel, cand: LoadedModel, requests: int, rng: np.random.Generator,
                      passes: int = 5) -> tuple[float | None, float | None, int]:
    """p99 compute time (ms) of the candidate and production on the same logged requests (and how
    many requests), replayed one request
    at a time, interleaved (alternating which runs first), so both see the same machine.

    Each session is warmed up first (a fresh session's first runs pay one-time costs), and each
    request's time is the fastest of its runs in ``passes`` passes over all the requests: what
    the request costs, not what the scheduler did to one run of it. The passes spread a
    request's runs over the whole measurement, so one busy stretch of the machine (the host's
    request threads holding the interpreter, another evaluator replaying) slows only one of
    them; runs repeated back to back would all fall in it.
    """
    ids = pc.unique(table.column("request_id"))
    if len(ids) == 0:
        return None, None, 0
    chosen = ids.take(pa.array(rng.choice(len(ids), size=min(requests, len(ids)), replace=False)))
    rows = table.filter(pc.is_in(table.column("request_id"), value_set=chosen))
    rid = np.asarray(rows.column("request_id").to_pylist(), dtype=object)
    order = np.argsort(rid, kind="stable")
    rid = rid[order]
    starts = np.flatnonzero(np.r_[True, rid[1:] != rid[:-1]])
    ends = np.r_[starts[1:], len(rid)]
    groups = (rows.take(pa.array(order[a:b])) for a, b in zip(starts, ends))
    parts = [(log_feeds(prod, p), log_feeds(cand, p)) for p in groups]
    for _ in range(3):
        prod.session.run(None, parts[0][0])
        cand.session.run(None, parts[0][1])
    best = np.full((len(parts), 2), np.inf)  # seconds: [request, (production, candidate)]
    for r in range(passes):
        for k, (p_feeds, c_feeds) in enumerate(parts):
            runs = ((0, prod, p_feeds), (1, cand, c_feeds))
            for which, loaded, feeds in (runs if (k + r) % 2 == 0 else runs[::-1]):
                t0 = time.perf_counter()
                loaded.session.run(None, feeds)
                best[k, which] = min(best[k, which], time.perf_counter() - t0)
    return _p99(best[:, 1] * 1e3), _p99(best[:, 0] * 1e3), len(parts)


#: A replayed latency breach is measured again up to this many times more, and stands only if
#: every measurement breaches: a real slowdown does every time, a busy moment does not.
LATENCY_CONFIRMATIONS = 2


def _confirmed_latency(table, prod: LoadedModel, cand: LoadedModel, requests: int, rng: np.random.Generator,
                       spec: ModelSpec) -> tuple[float | None, float | None, int, int]:
    """The replayed p99s to judge, how many measurements they took and over how many requests:
    the first measurement, or when it breaches the latency guardrail, the least damning of it
    and up to ``LATENCY_CONFIRMATIONS`` more."""
    best = _replayed_latency(table, prod, cand, requests, rng)
    measured = 1
    while measured <= LATENCY_CONFIRMATIONS and latency_breached(best[0], best[1], spec.rollout):
        again = _replayed_latency(table, prod, cand, requests, rng)
        measured += 1
        if _ratio(again) < _ratio(best):
            best = again
    return best[0], best[1], measured, best[2]


def _ratio(measured: tuple[float | None, float | None, int]) -> float:
    cand, prod, _ = measured
    return cand / prod if cand is not None and prod else np.inf


def columns_for(spec: ModelSpec, *loaded: LoadedModel) -> list[str]:
    """The log columns an evaluation reads: identity, timing, outputs, and each version's inputs."""
    cols = list(_BASE) + [ERROR_COLUMN]
    for version in loaded:
        cols += [name for name, _ in version.schema]
        if version.is_classifier:
            cols += [f"proba_{c}" for c in version.classes or ()]
    return list(dict.fromkeys(cols))


def evaluate_window(spec: ModelSpec, state: RolloutState, table, feedback, prod: LoadedModel, cand: LoadedModel,
                    *, since: float, until: float, max_replay_rows: int = MAX_REPLAY_ROWS,
                    max_labelled_rows: int = MAX_LABELLED_ROWS, latency_requests: int = LATENCY_REQUESTS,
                    seed: int = 0, reference_std: float = 0.0) -> RolloutEvidence:
    """The evidence of one step from its window's log ``table`` (Arrow, or None) and ``feedback``."""
    base: dict[str, Any] = dict(window_from=since, window_to=until, metric=spec.metric,
                                higher_is_better=spec.higher_is_better)
    if table is None:
        return RolloutEvidence(**base)
    shadow = state.current_step == "shadow"
    rng = np.random.default_rng(seed)
    version = table.column("version").to_numpy()
    err_col = table.column(ERROR_COLUMN)
    failed = pc.fill_null(pc.not_equal(pc.cast(err_col, pa.string()), ""), False).to_numpy(zero_copy_only=False) \
        if err_col.null_count < table.num_rows else np.zeros(table.num_rows, dtype=bool)
    is_cand, is_prod = version == state.candidate, version == state.champion
    first = table.column("row").to_numpy() == 0  # one row per request: its latency
    latency = table.column("latency_ms").to_numpy(zero_copy_only=False)
    prod_rows, prod_errors = int(is_prod.sum()), int((is_prod & failed).sum())
    # The rows to pair: answered (not failed) by either version; in shadow, production's only.
    usable = (is_prod | (is_cand & (not shadow))) & ~failed
    idx = np.flatnonzero(usable)
    if len(idx) > max_replay_rows:
        idx = np.sort(rng.choice(idx, size=max_replay_rows, replace=False))
    sample = table.take(pa.array(idx))
    replay_error = None
    scored = None
    try:
        scored = _pairs(sample, is_cand[idx], prod, cand) if len(idx) else None
    except Exception as exc:  # a candidate that cannot run on logged rows: its rows count as errors
        replay_error = f"replay failed: {type(exc).__name__}: {exc}"[:300]
    div, psi_ = (divergence(scored.cand, scored.prod, spec.is_classifier, reference_std) if scored is not None
                 else (None, None))
    measured = 0  # replayed latency measurements
    c_requests = p_requests = 0  # behind each p99
    unmatched = 0  # logged requests of a size the other version did not answer
    if shadow:
        cand_rows = len(idx)
        cand_errors = cand_rows if replay_error else 0
        c_p99, p_p99 = None, None
        try:
            if cand_rows and not replay_error:
                c_p99, p_p99, measured, c_requests = _confirmed_latency(table.filter(pa.array(usable)), prod, cand,
                                                                        latency_requests, rng, spec)
                p_requests = c_requests
        except Exception:  # noqa: BLE001 - the latency guardrail is then not judged; say why in the log
            log.exception("replaying requests for compute time failed")
            c_p99, p_p99 = None, None
        source = "replayed"
    else:
        cand_rows, cand_errors = int(is_cand.sum()), int((is_cand & failed).sum())
        if replay_error:  # production could not score the candidate's rows, or the reverse
            cand_errors = max(cand_errors, cand_rows)
        c_first, p_first = is_cand & first & ~failed, is_prod & first & ~failed
        cls = size_class(request_sizes(table.column("row").to_numpy(), c_first | p_first))
        c_at, p_at = c_first[c_first | p_first], p_first[c_first | p_first]
        c_p99, p_p99, c_requests, p_requests, unmatched = matched_p99(latency[c_first], cls[c_at],
                                                                      latency[p_first], cls[p_at])
        source = "logged"
    evidence: dict[str, Any] = dict(base, candidate_rows=cand_rows, production_rows=prod_rows,
                    candidate_errors=cand_errors, production_errors=prod_errors, candidate_p99_ms=c_p99,
                    production_p99_ms=p_p99,
                    latency_source=source, latency_measurements=measured,
                    candidate_requests=c_requests, production_requests=p_requests,
                    latency_unmatched_requests=unmatched,
                    paired_rows=0 if scored is None else len(idx), divergence=div,
                    output_psi=psi_, replay_error=replay_error)
    if replay_error is None and feedback is not None and len(feedback):
        evidence.update(_labelled(spec, table, feedback, usable, is_cand, prod, cand, max_labelled_rows))
    return RolloutEvidence(**evidence)


def _labelled(spec: ModelSpec, table, feedback, usable: np.ndarray, is_cand: np.ndarray, prod: LoadedModel,
              cand: LoadedModel, max_rows: int) -> dict[str, Any]:
    """Both versions' live metric on the same labelled rows, and the sign test's counts."""
    ids = pa.array(feedback["request_id"].astype(str).unique())
    hit = pc.is_in(table.column("request_id"), value_set=ids).to_numpy(zero_copy_only=False) & usable
    idx = np.flatnonzero(hit)[:max_rows]
    if not len(idx):
        return {}
    part = table.take(pa.array(idx))
    keys = part.select(["request_id", "row"]).to_pandas()
    keys["_i"] = np.arange(len(keys))
    # A (request_id, row) logged twice (a log from before request ids were minted by the
    # server) is ambiguous: whose ground truth it is cannot be told, so it joins none.
    keys = keys[~keys.duplicated(["request_id", "row"], keep=False)]
    joined = keys.merge(feedback, on=["request_id", "row"], how="inner")
    if joined.empty:
        return {}
    rows = joined["_i"].to_numpy()
    part = part.take(pa.array(rows))
    scored = _pairs(part, is_cand[idx][rows], prod, cand)
    truth = joined["truth"].to_numpy()
    classes = [str(c) for c in prod.classes or ()]
    cand_loss = _losses(spec, truth, scored.cand, scored.cand_proba, classes)
    prod_loss = _losses(spec, truth, scored.prod, scored.prod_proba, classes)
    return {"labelled_rows": int(len(truth)),
            "candidate_metric": _metrics(spec, truth, scored.cand, scored.cand_proba, classes),
            "production_metric": _metrics(spec, truth, scored.prod, scored.prod_proba, classes),
            "worse_rows": int((cand_loss > prod_loss).sum()), "better_rows": int((cand_loss < prod_loss).sum())}


def gather(storage: Storage, spec: ModelSpec, state: RolloutState, prod: LoadedModel, cand: LoadedModel, *,
           until: float, now: float, **bounds: Any) -> RolloutEvidence:
    """The evidence of ``state``'s current step: its window is from the step's start to ``until``
    (the log's settled edge); feedback received up to ``now`` counts."""
    since = state.step_started_at
    if until <= since:
        return RolloutEvidence(window_from=since, window_to=until, metric=spec.metric,
                               higher_is_better=spec.higher_is_better)
    table = read_window(storage, state.model, since, until, columns_for(spec, prod, cand))
    feedback = read_feedback_table(storage, state.model, since, now) if table is not None else None
    return evaluate_window(spec, state, table, feedback, prod, cand, since=since, until=until, **bounds)
