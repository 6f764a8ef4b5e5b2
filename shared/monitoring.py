"""Monitoring: drift and live performance of each production model, reports, retraining.

``monitor_model`` reads the inference log since the model's last run (bounded by the
window setting), compares it with the production version's reference profile, joins
feedback by request id for live performance, writes ``report.json`` and ``report.html``
under ``monitoring/<model>/<timestamp>/``, and requests retraining when a breach has
persisted for the spec's number of runs and the last request is older than the cooldown.
``handle_retrain`` assembles the retraining dataset and drops it into ``datasets/``.
"""
from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from shared.context import Context
from shared.drift import Thresholds, categorical_drift, numeric_drift
from shared.errors import AlreadyExists, NotFound, PreconditionFailed
from shared.jsonio import get_json, put_json
from shared.messages import RunMessage
from shared.spec import ModelSpec

log = logging.getLogger("mlops.monitoring")

CONTAINER = "monitoring"
LOGS = "inference-logs"
FEEDBACK = "feedback"
REPORT_SCHEMA_VERSION = 1
HISTORY = 50


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _hours(since: float, until: float) -> list[str]:
    start = datetime.fromtimestamp(since, timezone.utc).replace(minute=0, second=0, microsecond=0)
    end = datetime.fromtimestamp(until, timezone.utc)
    out = []
    while start <= end:
        out.append(start.strftime("%Y-%m-%d/%H"))
        start += timedelta(hours=1)
    return out


def _part_time(name: str) -> float:
    try:
        return float(name.rsplit("/", 1)[-1].split("-", 1)[0])
    except ValueError:
        return 0.0


def read_log(ctx: Context, model: str, since: float, until: float) -> pd.DataFrame:
    """Logged rows of ``model`` written in [since, until)."""
    frames = []
    for hour in _hours(since, until):
        for blob in ctx.storage.list(LOGS, f"{model}/{hour}/"):
            if since <= _part_time(blob.name) < until + 5:
                frames.append(pd.read_parquet(io.BytesIO(ctx.storage.get(LOGS, blob.name).data)))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    t = table["time"]
    if not pd.api.types.is_numeric_dtype(t):  # a timestamp column, whatever its unit
        t = (t - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return table[(t >= since) & (t < until)].reset_index(drop=True)


def read_feedback(ctx: Context, model: str, since: float, until: float) -> pd.DataFrame:
    frames = []
    day = datetime.fromtimestamp(since, timezone.utc).date()
    last = datetime.fromtimestamp(until, timezone.utc).date()
    while day <= last:
        for blob in ctx.storage.list(FEEDBACK, f"{model}/{day.isoformat()}/"):
            if since <= _part_time(blob.name) < until + 5:
                frames.append(pd.read_parquet(io.BytesIO(ctx.storage.get(FEEDBACK, blob.name).data)))
        day += timedelta(days=1)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def labelled_rows(logs: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Logged rows with their ground truth (``truth``), joined on request id and row."""
    if logs.empty or feedback.empty:
        return pd.DataFrame()
    fb = feedback.drop_duplicates(["request_id", "row"], keep="last")[["request_id", "row", "truth"]]
    return logs.merge(fb, on=["request_id", "row"], how="inner")


def _performance(spec: ModelSpec, manifest: dict, joined: pd.DataFrame) -> dict[str, Any]:
    from shared.train import compute_metrics

    reference = manifest["metrics"].get(spec.metric)
    if joined.empty:
        return {"rows": 0, "metric": spec.metric, "value": None, "reference": reference, "degraded": False}
    if spec.is_classifier:
        classes = [str(c) for c in manifest["classes"]]
        proba_cols = [f"proba_{c}" for c in classes]
        proba = joined[proba_cols].to_numpy() if all(c in joined for c in proba_cols) else None
        y = joined["truth"].astype(str).to_numpy()
        try:
            metrics = compute_metrics(spec, y, joined["prediction"].astype(str).to_numpy(), proba, np.array(classes))
        except ValueError:  # e.g. one class only among the labelled rows: ROC AUC undefined
            metrics = compute_metrics(spec, y, joined["prediction"].astype(str).to_numpy(), None, np.array(classes))
    else:
        metrics = compute_metrics(spec, joined["truth"].to_numpy(float), joined["prediction"].to_numpy(float))
    value = metrics.get(spec.metric)
    degraded = False
    if value is not None and reference is not None:
        tol = spec.monitoring.performance_tolerance * abs(reference)
        degraded = value < reference - tol if spec.higher_is_better else value > reference + tol
    return {"rows": int(len(joined)), "metric": spec.metric, "value": value, "reference": reference,
            "all": metrics, "degraded": bool(degraded)}


def _state(ctx: Context, model: str) -> tuple[dict[str, Any], str | None]:
    found = get_json(ctx.storage, CONTAINER, f"{model}/state.json")
    return (found[0], found[1]) if found else ({"consecutive_breaches": 0, "history": []}, None)


def _alert(ctx: Context, model: str, kind: str, detail: dict[str, Any]) -> None:
    ctx.alert(model, kind, detail)


def monitor_model(ctx: Context, model: str, now: float | None = None) -> dict[str, Any] | None:
    """One monitoring run for ``model``; None if it has no production version."""
    now = time.time() if now is None else now
    spec = ctx.specs.get(model)
    alias = ctx.registry.alias(model)
    if alias is None:
        return None
    version = alias.version
    manifest = ctx.registry.manifest(model, version)
    profile = ctx.registry.profile(model, version, manifest)
    state, state_etag = _state(ctx, model)
    window = ctx.settings.monitor_window_minutes * 60
    since = max(state.get("last_to", 0.0), now - window)
    logs = read_log(ctx, model, since, now)
    mon = spec.monitoring
    th = Thresholds(psi=mon.psi, p_value=mon.p_value, js=mon.js)

    features: dict[str, Any] = {}
    prediction: dict[str, Any] = {}
    dataset = {"drifted": False, "share": 0.0, "threshold": ctx.settings.drift_share, "drifted_features": []}
    enough = len(logs) >= mon.min_rows
    if enough:
        for col, prof in profile["features"].items():
            if col not in logs:
                continue
            features[col] = (numeric_drift(prof, logs[col].to_numpy(), th) if prof["type"] == "numeric"
                             else categorical_drift(prof, logs[col], th))
        drifted = [c for c, r in features.items() if r.get("drifted")]
        share = len(drifted) / max(len(features), 1)
        dataset = {"drifted": share >= ctx.settings.drift_share, "share": share,
                   "threshold": ctx.settings.drift_share, "drifted_features": drifted}
        own = logs[logs["version"] == version]
        if len(own) >= mon.min_rows:
            pprof = profile["prediction"]
            prediction = (numeric_drift(pprof, own["prediction"].to_numpy(float), th) if pprof["type"] == "numeric"
                          else categorical_drift(pprof, own["prediction"].astype(str).to_numpy(), th))
    performance = _performance(spec, manifest, labelled_rows(logs, read_feedback(ctx, model, since, now)))
    breach = bool(dataset["drifted"] or prediction.get("drifted") or performance["degraded"])
    if not enough and not performance["rows"]:
        verdict = "insufficient_data"
    elif performance["degraded"]:
        verdict = "degraded"
    elif breach:
        verdict = "drift"
    else:
        verdict = "ok"
    consecutive = state.get("consecutive_breaches", 0)
    if verdict != "insufficient_data":
        consecutive = consecutive + 1 if breach else 0

    cooldown = mon.retrain_cooldown_minutes * 60
    last_retrain = state.get("last_retrain_at", 0.0)
    if not breach:
        retrain = {"requested": False, "reason": "no breach"}
    elif consecutive < mon.breaches_to_retrain:
        retrain = {"requested": False, "reason": f"breach {consecutive} of {mon.breaches_to_retrain} needed"}
    elif now - last_retrain < cooldown:
        retrain = {"requested": False, "reason": f"cooldown: last retraining {int(now - last_retrain)} s ago "
                                                 f"(cooldown {int(cooldown)} s)"}
    else:
        retrain = {"requested": True, "reason": f"breach persisted for {consecutive} runs"}

    stamp = _stamp(now)
    history = (state.get("history", []) + [{
        "generated_at": now, "generated_at_iso": _iso(now), "verdict": verdict,
        "drift_share": dataset["share"] if enough else None, "performance": performance["value"],
    }])[-HISTORY:]
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": model,
        "version": version,
        "generated_at": now,
        "generated_at_iso": _iso(now),
        "window": {"from": since, "to": now, "from_iso": _iso(since), "to_iso": _iso(now)},
        "rows": int(len(logs)),
        "min_rows": mon.min_rows,
        "verdict": verdict,
        "thresholds": th.to_dict(),
        "dataset_drift": dataset,
        "features": features,
        "prediction_drift": prediction,
        "performance": performance,
        "breach": breach,
        "consecutive_breaches": consecutive,
        "retraining": retrain,
        "history": history,
    }
    from shared.report_html import render

    folder = f"{model}/{stamp}"
    put_json(ctx.storage, CONTAINER, f"{folder}/report.json", report)
    ctx.storage.put(CONTAINER, f"{folder}/report.html", render(report, profile).encode())
    put_json(ctx.storage, CONTAINER, f"{model}/latest.json", {"report": f"{folder}/report.json", "at": now})

    new_state = {**state, "last_to": now, "consecutive_breaches": consecutive, "history": history}
    if retrain["requested"]:
        new_state["last_retrain_at"] = now
    try:
        if state_etag is None:
            put_json(ctx.storage, CONTAINER, f"{model}/state.json", new_state, create_only=True)
        else:
            put_json(ctx.storage, CONTAINER, f"{model}/state.json", new_state, if_match=state_etag)
    except (PreconditionFailed, AlreadyExists):
        # Another monitor run finished first: it owns this window and any retraining request.
        log.warning("monitoring state of %s changed concurrently; this run's report stays, its decision does not", model)
        return report
    if breach:
        _alert(ctx, model, "breach", {"verdict": verdict, "report": f"{CONTAINER}/{folder}/report.json",
                                      "drifted_features": dataset["drifted_features"],
                                      "performance": performance["value"]})
    if retrain["requested"]:
        msg = RunMessage("retrain_requested", model, f"retrain-{stamp.lower().replace('.', '-')}"[:64],
                         correlation_id=f"monitor-{stamp}", extra={"report": f"{folder}/report.json"})
        ctx.bus.send(ctx.settings.queue_retrain, msg.to_outgoing())
        _alert(ctx, model, "retrain_requested", {"run_id": msg.run_id, "reason": retrain["reason"]})
    return report


def monitor_all(ctx: Context, now: float | None = None) -> dict[str, str]:
    """Monitor every model with a production version; one model's failure does not stop the rest."""
    out = {}
    for model in ctx.specs.names():
        try:
            report = monitor_model(ctx, model, now)
            out[model] = report["verdict"] if report else "no production version"
        except Exception as exc:  # noqa: BLE001 - reported per model
            log.exception("monitoring %s failed", model)
            out[model] = f"failed: {exc}"
    return out


def latest_report(ctx: Context, model: str, fmt: str = "json") -> bytes:
    found = get_json(ctx.storage, CONTAINER, f"{model}/latest.json")
    if found is None:
        raise NotFound(f"no monitoring report for model {model!r} yet")
    name = found[0]["report"]
    if fmt == "html":
        name = name.removesuffix(".json") + ".html"
    blob = ctx.storage.get(CONTAINER, name)
    assert blob is not None
    return blob.data


# -- retraining ------------------------------------------------------------------------------
def handle_retrain(ctx: Context, msg: RunMessage, now: float | None = None, lookback_days: int = 7) -> str | None:
    """Assemble a retraining dataset by the spec's policy and drop it into ``datasets/``."""
    now = time.time() if now is None else now
    model = msg.model
    spec = ctx.specs.get(model)
    name = f"{model}/{msg.run_id}.parquet"
    if ctx.storage.head("datasets", name) is not None:
        return f"datasets/{name}"  # a redelivered request: the dataset is already there
    versions = ctx.registry.versions(model)
    if not versions:
        return None
    manifest = ctx.registry.manifest(model, versions[-1])
    source = manifest["dataset"]["name"].split("/", 1)[1]
    from shared.data import ORIGIN_COLUMN, read_table, validate

    base = validate(read_table(ctx.storage.get("datasets", source).data, source), spec, source).frame
    since = now - lookback_days * 86400
    joined = labelled_rows(read_log(ctx, model, since, now), read_feedback(ctx, model, since, now))
    fresh = pd.DataFrame()
    if not joined.empty:
        fresh = joined[list(spec.features)].copy()
        truth = joined["truth"]
        if spec.is_classifier and pd.api.types.is_integer_dtype(base[spec.target]):
            truth = pd.to_numeric(truth, errors="coerce")
        fresh[spec.target] = truth.to_numpy()
        fresh = fresh.dropna(subset=[spec.target])
    # Mark where each row came from: a dataset carrying this column never adds to the exam.
    base = base.assign(**{ORIGIN_COLUMN: "dataset"})
    fresh = fresh.assign(**{ORIGIN_COLUMN: "feedback"}) if len(fresh) else fresh
    mon = spec.monitoring
    if mon.retrain_policy == "recent" and len(fresh) >= spec.min_rows:
        frame = fresh
    else:
        frame = pd.concat([base, fresh], ignore_index=True)
    frame = frame.tail(mon.retrain_max_rows)  # the newest rows win when over the cap
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    try:
        ctx.storage.put("datasets", name, buf.getvalue(), create_only=True)
    except AlreadyExists:
        pass
    log.info("retraining %s: %d rows (%d labelled from live traffic) -> datasets/%s", model, len(frame), len(fresh), name)
    return f"datasets/{name}"
