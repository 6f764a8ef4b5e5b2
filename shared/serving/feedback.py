"""Ground truth posted back for earlier predictions, stored for monitoring to join.

Feedback is untrusted input: it needs a key of the feedback function (see docs/monitoring.md), and
only items that match a logged prediction by ``(request_id, row)`` are stored; the rest are
counted in the response and dropped, so they can never reach a retraining dataset. Request ids
are minted by the server and unguessable, so a client can name only rows it was answered.

A logged ``(request_id, row)`` joins at most one feedback item, the first: a repeat in the same
post, or of an item stored before, is counted (``duplicates``) and not stored; and every join
(the monitor's, the rollout evidence's) keeps the first received of any that got through
concurrently (``first_per_row``).
"""
from __future__ import annotations

import io
import math
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.errors import InvalidRequest
from shared.core.spec import ModelSpec
from shared.ports.storage import Storage

CONTAINER = "feedback"
MAX_ITEMS = 10_000


def parse_feedback(payload: Any, spec: ModelSpec) -> list[dict[str, Any]]:
    """``{"feedback": [{"request_id": "...", "row": 0, "label": ...} | {"value": ...}]}``."""
    if not isinstance(payload, dict) or not isinstance(payload.get("feedback"), list):
        raise InvalidRequest("the body must be {\"feedback\": [{\"request_id\": ..., \"label\" or \"value\": ...}]}",
                             field="feedback")
    items = payload["feedback"]
    if not items:
        raise InvalidRequest("'feedback' holds no items", field="feedback")
    if len(items) > MAX_ITEMS:
        raise InvalidRequest(f"'feedback' holds {len(items)} items, over the limit of {MAX_ITEMS}", field="feedback")
    key = "label" if spec.is_classifier else "value"
    return [_item(i, item, key, spec) for i, item in enumerate(items)]


def _item(i: int, item: Any, key: str, spec: ModelSpec) -> dict[str, Any]:
    """One feedback item checked and typed: ``{"request_id", "row", "truth"}``."""
    where = f"feedback[{i}]"
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object", field=where, row=i)
    rid = item.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 128:
        raise InvalidRequest(f"'{where}.request_id' must be a non-empty string", field=f"{where}.request_id", row=i)
    row = item.get("row", 0)
    if not isinstance(row, int) or isinstance(row, bool) or row < 0:
        raise InvalidRequest(f"'{where}.row' must be a non-negative integer", field=f"{where}.row", row=i)
    if key not in item:
        raise InvalidRequest(f"'{where}' needs '{key}' for a {spec.task} model", field=f"{where}.{key}", row=i)
    truth = _truth(item[key], where, i, spec.is_classifier)
    extra = sorted(set(item) - {"request_id", "row", key})
    if extra:
        raise InvalidRequest(f"'{where}' has an unexpected field '{extra[0]}'", field=f"{where}.{extra[0]}", row=i)
    return {"request_id": rid, "row": row, "truth": truth}


def _truth(truth: Any, where: str, i: int, is_classifier: bool) -> str | float:
    """A label as text (classifiers) or a finite value as a float (regression)."""
    if is_classifier:
        if isinstance(truth, bool) or not isinstance(truth, (str, int)):
            raise InvalidRequest(f"'{where}.label' must be a string or integer", field=f"{where}.label", row=i)
        return str(truth)
    if isinstance(truth, bool) or not isinstance(truth, (int, float)) or not math.isfinite(truth):
        raise InvalidRequest(f"'{where}.value' must be a finite number", field=f"{where}.value", row=i)
    return float(truth)


def known_classes(registry: Any, model: str) -> set[str]:
    """The classes (as text, as feedback stores them) of the versions that may have answered a
    request: production and the newest version (a candidate in rollout); empty before either."""
    versions = registry.versions(model)
    production = registry.alias(model)
    wanted = {v for v in (production.version if production else None, versions[-1] if versions else None) if v}
    return {str(c) for v in wanted for c in registry.manifest(model, v).get("classes") or ()}


def check_labels(items: list[dict[str, Any]], model: str, classes: set[str]) -> None:
    """400 naming the first item whose label is not one of ``classes`` (none known: no check)."""
    for i, item in enumerate(items):
        if classes and item["truth"] not in classes:
            named = sorted(classes)
            listed = ", ".join(named[:20]) + (f", ... ({len(named)} in all)" if len(named) > 20 else "")
            raise InvalidRequest(f"'feedback[{i}].label': {item['truth']!r} is not a class of {model} ({listed})",
                                 field=f"feedback[{i}].label", row=i)


def match_logged(storage: Storage, model: str, items: list[dict[str, Any]], *, lookback_hours: int = 168,
                 now: float | None = None) -> list[bool]:
    """For each item, whether its ``(request_id, row)`` is in the inference log of ``model``."""
    return _match(storage, model, items, lookback_hours=lookback_hours, now=now)[0]


def _match(storage: Storage, model: str, items: list[dict[str, Any]], *, lookback_hours: int = 168,
           now: float | None = None) -> tuple[list[bool], float]:
    # here: the inference log's module brings numpy; the feedback route is the only reader here
    from shared.serving.inference_log import find_logged

    now = time.time() if now is None else now
    found, oldest = find_logged(storage, model, {(it["request_id"], it["row"]) for it in items},
                                lookback_hours=lookback_hours, now=now)
    return [(it["request_id"], it["row"]) in found for it in items], oldest


def stored_keys(storage: Storage, model: str, wanted: set[tuple[str, int]], since: float) -> set[tuple[str, int]]:
    """Which ``(request_id, row)`` of ``wanted`` already have feedback stored, in parts received
    from ``since`` on (no feedback for a prediction arrives before it was logged)."""
    from shared.serving.inference_log import keys_in_part, written_at  # here: the log's module brings numpy

    if not wanted:
        return set()
    ids = sorted({rid for rid, _ in wanted})
    found: set[tuple[str, int]] = set()
    day, last = datetime.fromtimestamp(since, UTC).date(), datetime.now(UTC).date()
    while day <= last:
        for blob in storage.list(CONTAINER, f"{model}/{day.isoformat()}/"):
            if written_at(blob.name) < since - 1:  # received before the oldest prediction was logged
                continue
            found |= keys_in_part(storage.get(CONTAINER, blob.name).data, ids)
        day += timedelta(days=1)
    return found & wanted


def first_per_row(frame):
    """Feedback with one item per ``(request_id, row)``: the first received (then the first
    written), whatever reached storage after it."""
    if frame.empty:
        return frame
    if "received_at" in frame:
        frame = frame.sort_values("received_at", kind="stable")
    return frame.drop_duplicates(["request_id", "row"], keep="first")


def store_feedback(storage: Storage, model: str, items: list[dict[str, Any]], now: float | None = None) -> str:
    """Write one Parquet part under ``feedback/<model>/<date>/``; returns its name."""
    # pyarrow, not pandas: the serving app, which stores feedback, carries no pandas.
    import pyarrow as pa
    import pyarrow.parquet as pq

    now = time.time() if now is None else now
    table = pa.Table.from_pylist(items)
    table = table.append_column("received_at", pa.array([int(now * 1e6)] * len(items), pa.timestamp("us", tz="UTC")))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    day = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    name = f"{model}/{day}/{now:.3f}-{uuid.uuid4().hex[:8]}.parquet"
    storage.put(CONTAINER, name, buf.getvalue())
    return f"{CONTAINER}/{name}"


def read_feedback(storage: Storage, model: str, since: float, until: float):
    """Feedback parts of ``model`` received in [since, until + 5 s), as one DataFrame."""
    # here: the serving package has no pandas; only the monitor reads feedback as a frame
    import pandas as pd

    from shared.serving.inference_log import written_at  # here: the log's module brings numpy

    frames = []
    day = datetime.fromtimestamp(since, UTC).date()
    last = datetime.fromtimestamp(until, UTC).date()
    while day <= last:
        for blob in storage.list(CONTAINER, f"{model}/{day.isoformat()}/"):
            if since <= written_at(blob.name) < until + 5:
                frames.append(pd.read_parquet(io.BytesIO(storage.get(CONTAINER, blob.name).data)))
        day += timedelta(days=1)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def accept_feedback(ctx, model: str, payload: Any) -> dict[str, Any]:
    """Validate feedback, store the items that match a logged prediction, say how many did.

    This worker's buffered predictions are flushed first so they count as logged; while storage
    refuses the log's writes (a full disk), matching would miss them, so the caller is told to
    send again (a transient error: 503 with Retry-After).
    """
    # here: the feedback route's own checks, loaded with it
    from shared.core.errors import TransientError
    from shared.core.limits import check_string

    spec = ctx.specs.get(model)
    items = parse_feedback(payload, spec)
    for i, item in enumerate(items):
        check_string(item["truth"], f"feedback[{i}].label", ctx.settings.max_string_chars, row=i)
    if spec.is_classifier:
        check_labels(items, model, known_classes(ctx.registry, model))
    ctx.inference_log.flush()
    if ctx.inference_log.unwritten_rows:
        raise TransientError("the inference log cannot be written right now; send the feedback again shortly")
    hits, oldest = _match(ctx.storage, model, items)
    seen: set[tuple[str, int]] = set()
    first: list[dict[str, Any]] = []
    repeats = 0
    for it, hit in zip(items, hits):
        key = (it["request_id"], it["row"])
        if hit and key in seen:  # the same row twice in one post: the first wins
            repeats += 1
        elif hit:
            seen.add(key)
            first.append(it)
    before = stored_keys(ctx.storage, model, seen, oldest)
    matched = [it for it in first if (it["request_id"], it["row"]) not in before]
    duplicates = repeats + len(first) - len(matched)
    where = store_feedback(ctx.storage, model, matched) if matched else None
    unmatched = [{"request_id": it["request_id"], "row": it["row"]} for it, hit in zip(items, hits) if not hit]
    # received = matched (stored) + duplicates (matched a row that already has its item) + unmatched
    return {"model": model, "received": len(items), "matched": len(matched), "duplicates": duplicates,
            "unmatched": len(unmatched), "unmatched_examples": unmatched[:5], "stored": where}
