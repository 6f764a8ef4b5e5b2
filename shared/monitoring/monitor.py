"""Monitoring: drift and live performance of each production model, reports, retraining.

``monitor_model`` reads the inference log since the model's last conclusive run (bounded
by the window setting), compares it with the production version's reference profile, joins
feedback by request id for live performance, writes ``report.json`` under
``monitoring/<model>/<window end>-<id>/`` and commits the model's ``state.json`` (history,
latest, last conclusive verdict, breach count) with an ETag condition, and requests
retraining when a breach has persisted for the spec's number of runs and the last request
is older than the cooldown, and no rollout is live (a retraining request waits for it to end).
The HTML page is rendered from the JSON when asked for.
``handle_retrain`` assembles the retraining dataset and drops it into ``datasets/``.
"""
from __future__ import annotations

import io
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from shared.context import Context
from shared.core.errors import AlreadyExists, InvalidRequest, NotFound, PreconditionFailed
from shared.core.limits import REPORT_HISTORY
from shared.core.records import Manifest, MonitoringReport
from shared.core.spec import ModelSpec
from shared.monitoring.drift import Thresholds, categorical_drift, numeric_drift, snap_to_reference
from shared.monitoring.headline import headline
from shared.monitoring.report_html import render
from shared.pipeline.messages import RunMessage
from shared.registry import datasets
from shared.registry.jsonio import dumps, get_json, put_json
from shared.registry.rollouts import RolloutStore
from shared.serving import feedback
from shared.serving.feedback import first_per_row
from shared.serving.inference_log import read_parts, read_rows, request_times

if TYPE_CHECKING:  # imported where used: the serving app reads reports here and carries no pandas
    import pandas as pd

log = logging.getLogger("mlops.monitoring")

CONTAINER = "monitoring"
REPORT_SCHEMA_VERSION = 2
HISTORY = REPORT_HISTORY  # the listing route bounds its ?limit= with the same constant
STATE = "state.json"
REPORT = "report.json"
SETTLE_MARGIN_SECONDS = 1.0


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def read_log(ctx: Context, model: str, since: float, until: float) -> pd.DataFrame:
    """Logged rows of ``model`` with a request time in [since, until)."""
    return read_rows(ctx.storage, model, since, until)


def read_feedback(ctx: Context, model: str, since: float, until: float) -> pd.DataFrame:
    return feedback.read_feedback(ctx.storage, model, since, until)


def labelled_rows(logs: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """Logged rows with their ground truth (``truth``), joined on request id and row: each row
    with at most one item, the first received. A ``(request_id, row)`` logged twice (a log from
    before request ids were minted by the server) is ambiguous and joins none."""
    import pandas as pd  # here: the serving app reads reports through this module and carries no pandas

    if logs.empty or feedback.empty:
        return pd.DataFrame()
    fb = first_per_row(feedback)[["request_id", "row", "truth"]]
    logs = logs[~logs.duplicated(["request_id", "row"], keep=False)]
    return logs.merge(fb, on=["request_id", "row"], how="inner")


def _performance(spec: ModelSpec, manifest: Manifest, joined: pd.DataFrame) -> dict[str, Any]:
    from shared.pipeline.train import compute_metrics  # here: train brings pandas, which the serving app lacks

    reference = manifest["metrics"].get(spec.metric)
    if joined.empty:
        return {"rows": 0, "metric": spec.metric, "value": None, "reference": reference, "degraded": False}
    if spec.is_classifier:
        names = manifest["classes"]
        assert names is not None  # a classifier's manifest lists its classes
        classes = [str(c) for c in names]
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
    found = get_json(ctx.storage, CONTAINER, f"{model}/{STATE}")
    return (found[0], found[1]) if found else ({"consecutive_breaches": 0, "history": []}, None)


def _alert(ctx: Context, model: str, kind: str, detail: dict[str, Any]) -> None:
    ctx.alert(model, kind, detail)


def settle_seconds(ctx: Context) -> float:
    """How long after its request time a logged row is surely in storage.

    A server writes its buffered log rows every ``MLOPS_INFERENCE_LOG_FLUSH_SECONDS``; rows
    younger than that may still be in its memory. A run judges every row written so far, up
    to its start; the next run reads the last ``settle_seconds`` before that again, for the
    rows that were still buffered, and skips the log parts this run has judged already.
    """
    return 2 * ctx.settings.inference_log_flush_seconds + SETTLE_MARGIN_SECONDS


def _window_rows(ctx: Context, model: str, state: dict[str, Any], since: float, until: float,
                 settled: float) -> tuple[pd.DataFrame, list[str], int]:
    """The rows a run judges, the log parts it read with rows from ``settled`` on, and how
    many rows came late.

    ``state`` says what earlier runs judged: every row before ``settled_to``, and from there
    to ``last_to`` the rows of the parts in ``judged_parts``. A part written since (rows that
    were still in a server's buffer) adds its rows before ``last_to`` to this run, once.
    """
    import pandas as pd  # here: the serving app reads reports through this module and carries no pandas

    last_to = state.get("last_to", float("-inf"))
    judged = set(state.get("judged_parts", ()))
    frames, recent, late = [], [], 0
    for name, rows in read_parts(ctx.storage, model, since, until).items():
        t = request_times(rows)
        if (t >= settled).any():  # the next run reads these rows again: it must know they were judged
            recent.append(name)
        before = t < last_to
        if name in judged:
            rows = rows[~before]
        else:
            late += int(before.sum())
        frames.append(rows)
    logs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return logs, sorted(recent), late


def _evaluate(ctx: Context, spec: ModelSpec, model: str, version: int, manifest: Manifest, profile: dict,
              state: dict[str, Any], logs: pd.DataFrame, since: float, until: float, now: float) -> MonitoringReport:
    """The report of one window, with the breach count and retraining decision ``state`` implies."""
    mon = spec.monitoring
    th = Thresholds(psi=mon.psi, p_value=mon.p_value, js=mon.js)
    enough = len(logs) >= mon.min_rows
    features, dataset, prediction = _drift(ctx, spec, version, profile, logs, th)
    # Ground truth comes after the prediction: whatever has arrived so far for the window's rows.
    feedback = read_feedback(ctx, model, since, max(now, time.time()))
    # Production's own rows: the window also holds rows a previous version (before a promotion)
    # or a canary candidate answered, which production's reference says nothing about.
    own = logs[logs["version"] == version] if "version" in logs else logs
    performance = _performance(spec, manifest, labelled_rows(own, feedback))
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
    if breach:
        consecutive += 1
    elif enough:  # a clean window resets the count only if it could judge drift (min_rows rows)
        consecutive = 0
    retrain = _retraining(ctx, spec, model, state, breach, consecutive, now)
    report: MonitoringReport = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "model": model,
        "version": version,
        "generated_at": now,
        "generated_at_iso": _iso(now),
        "window": {"from": since, "to": until, "from_iso": _iso(since), "to_iso": _iso(until)},
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
    }
    report["headline"] = headline(report)
    return report


def _drift(ctx: Context, spec: ModelSpec, version: int, profile: dict, logs: pd.DataFrame,
           th: Thresholds) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Each feature's drift, the dataset's (the share of drifted features) and the prediction's
    (on the rows ``version`` answered); empty, and no dataset drift, under ``min_rows`` rows."""
    mon = spec.monitoring
    features: dict[str, Any] = {}
    prediction: dict[str, Any] = {}
    dataset = {"drifted": False, "share": 0.0, "threshold": ctx.settings.drift_share, "drifted_features": []}
    if len(logs) < mon.min_rows:
        return features, dataset, prediction
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
        if pprof["type"] == "numeric":
            served = snap_to_reference(pprof, own["prediction"].to_numpy(float), spec.parity_rtol, spec.parity_atol)
            prediction = numeric_drift(pprof, served, th)
        else:
            prediction = categorical_drift(pprof, own["prediction"].astype(str).to_numpy(), th)
    return features, dataset, prediction


def _retraining(ctx: Context, spec: ModelSpec, model: str, state: dict[str, Any], breach: bool, consecutive: int,
                now: float) -> dict[str, Any]:
    """Whether this run asks for retraining, and why (or why not yet)."""
    mon = spec.monitoring
    cooldown = mon.retrain_cooldown_minutes * 60
    last_retrain = state.get("last_retrain_at", 0.0)
    rollout = RolloutStore(ctx.storage).read(model)
    if not breach:
        return {"requested": False, "reason": "no breach"}
    if rollout is not None and rollout.state.live:
        # A new version is already earning production on live traffic: a retrained one would
        # supersede it before it could prove itself. The breach counts on; it is asked for after.
        return {"requested": False, "reason": f"deferred: v{rollout.state.candidate} is in rollout "
                                              f"({rollout.state.status}, step {rollout.state.step + 1} "
                                              f"of {len(rollout.state.steps)})"}
    if consecutive < mon.breaches_to_retrain:
        return {"requested": False, "reason": f"breach {consecutive} of {mon.breaches_to_retrain} needed"}
    if now - last_retrain < cooldown:
        return {"requested": False, "reason": f"cooldown: last retraining {int(now - last_retrain)} s ago "
                                              f"(cooldown {int(cooldown)} s)"}
    return {"requested": True, "reason": f"breach persisted for {consecutive} runs"}


def _entry(report: MonitoringReport, name: str) -> dict[str, Any]:
    """A report's line in the history: enough for the over-time chart and the listing."""
    conclusive = report["verdict"] != "insufficient_data"
    return {"report": name, "generated_at": report["generated_at"], "generated_at_iso": report["generated_at_iso"],
            "window": {"from": report["window"]["from"], "to": report["window"]["to"]},
            "rows": report["rows"], "verdict": report["verdict"], "headline": report["headline"],
            "drift_share": report["dataset_drift"]["share"] if report["features"] else None,
            "drifted_features": report["dataset_drift"]["drifted_features"],
            "performance": report["performance"]["value"], "retrain_requested": report["retraining"]["requested"],
            "conclusive": conclusive}


def monitor_model(ctx: Context, model: str, now: float | None = None, *,
                  max_attempts: int = 8) -> MonitoringReport | None:
    """One monitoring run for ``model``; None if it has no production version.

    The run judges the rows logged from where the last conclusive run ended up to ``now``
    (at most the window setting long): traffic is judged as soon as a server has written it
    (every ``MLOPS_INFERENCE_LOG_FLUSH_SECONDS``). Rows that were still in a server's buffer
    then are judged by the next run, once (``_window_rows``). It writes its report
    under a name of its own, then commits the model's state (window end, breach count,
    history, latest) with an ETag condition. If another run committed first, this run's
    report is deleted and the run starts again from the new state: windows never overlap
    and no row falls between two. A run whose window ends before the latest committed one
    (a slower run that started earlier) is superseded: nothing is written, and ``latest``
    only moves forward in time. An ``insufficient_data`` run is recorded, but its rows stay
    for the next window and the last conclusive verdict stays visible beside it.
    """
    now = time.time() if now is None else now
    spec = ctx.specs.get(model)
    alias = ctx.registry.alias(model)
    if alias is None:
        return None
    version = alias.version
    manifest = ctx.registry.manifest(model, version)
    profile = ctx.registry.profile(model, version, manifest)
    until = now
    window = ctx.settings.monitor_window_minutes * 60
    for _ in range(max_attempts):
        state, state_etag = _state(ctx, model)
        latest = state.get("latest") or {}
        if until <= latest.get("to", float("-inf")):
            log.info("monitoring %s: a run up to %s is already recorded; this run (up to %s) is superseded",
                     model, latest.get("to_iso"), _iso(until))
            return {"model": model, "verdict": "superseded", "generated_at": now, "window": {"to": until},
                    "latest": latest}
        start = state.get("settled_to", state.get("last_to", 0.0))  # (a state from before settled_to: last_to)
        since = min(max(start, until - window), until)
        settled = min(until, max(since, now - settle_seconds(ctx)))
        logs, recent_parts, late = _window_rows(ctx, model, state, since, until, settled)
        shown_from = min(max(since, state.get("last_to", since)), until)  # late rows aside, windows do not overlap
        report = _evaluate(ctx, spec, model, version, manifest, profile, state, logs, shown_from, until, now)
        report["late_rows"] = late
        name = f"{model}/{_stamp(until)}-{uuid.uuid4().hex[:6]}/{REPORT}"
        entry = _entry(report, name)
        conclusive = entry["conclusive"]
        last_conclusive = entry if conclusive else state.get("last_conclusive")
        report["last_conclusive"] = last_conclusive
        report["history"] = (state.get("history", []) + [entry])[-HISTORY:]
        put_json(ctx.storage, CONTAINER, name, report, create_only=True)
        new_state = {**state, "consecutive_breaches": report["consecutive_breaches"], "history": report["history"],
                     "latest": {"report": name, "to": until, "to_iso": _iso(until), "at": now},
                     "last_conclusive": last_conclusive}
        if conclusive:  # an insufficient window's rows are judged with the next one
            new_state.update(last_to=until, settled_to=settled, judged_parts=recent_parts)
        if report["retraining"]["requested"]:
            new_state["last_retrain_at"] = now
        try:
            if state_etag is None:
                put_json(ctx.storage, CONTAINER, f"{model}/{STATE}", new_state, create_only=True)
            else:
                put_json(ctx.storage, CONTAINER, f"{model}/{STATE}", new_state, if_match=state_etag)
        except (PreconditionFailed, AlreadyExists):
            # Another run committed first: it owns its window and any retraining request.
            ctx.storage.delete(CONTAINER, name)
            log.info("monitoring state of %s changed concurrently; judging again from the new state", model)
            continue
        break
    else:
        raise PreconditionFailed(f"monitoring state of {model} kept changing; gave up after {max_attempts} attempts")
    _advance_latest(ctx, model, name, until)

    stamp = _stamp(until)
    verdict = report["verdict"]
    if report["breach"]:
        _alert(ctx, model, "breach", {"verdict": verdict, "report": f"{CONTAINER}/{name}",
                                      "drifted_features": report["dataset_drift"]["drifted_features"],
                                      "performance": report["performance"]["value"]})
    if report["retraining"]["requested"]:
        msg = RunMessage("retrain_requested", model, f"retrain-{stamp.lower().replace('.', '-')}"[:64],
                         correlation_id=f"monitor-{stamp}", extra={"report": name})
        ctx.bus.send(ctx.settings.queue_retrain, msg.to_outgoing())
        _alert(ctx, model, "retrain_requested", {"run_id": msg.run_id, "reason": report["retraining"]["reason"]})
    return report


def _advance_latest(ctx: Context, model: str, name: str, until: float) -> None:
    """Point ``latest.json`` at ``name`` unless it already points at a later window."""
    for _ in range(8):
        found = get_json(ctx.storage, CONTAINER, f"{model}/latest.json")
        if found and found[0].get("to", found[0].get("at", 0.0)) >= until:
            return
        body = {"report": name, "to": until, "at": time.time()}
        try:
            if found is None:
                put_json(ctx.storage, CONTAINER, f"{model}/latest.json", body, create_only=True)
            else:
                put_json(ctx.storage, CONTAINER, f"{model}/latest.json", body, if_match=found[1])
            return
        except (PreconditionFailed, AlreadyExists):
            continue


def monitor_all(ctx: Context, now: float | None = None) -> dict[str, str]:
    """Monitor every model with a production version; one model's failure does not stop the rest."""
    out = {}
    for model in ctx.specs.names():
        try:
            report = monitor_model(ctx, model, now)
            out[model] = report["verdict"] if report else "no production version"
            share = ((report or {}).get("dataset_drift") or {}).get("share")
            if (report is not None and ctx.telemetry.enabled and out[model] in ("ok", "drift", "degraded")
                    and isinstance(share, int | float)):
                ctx.telemetry.drift_share(model, report.get("version"), float(share))
        except Exception as exc:  # noqa: BLE001 - reported per model
            log.exception("monitoring %s failed", model)
            out[model] = f"failed: {exc}"
    return out


def _committed(ctx: Context, model: str) -> dict[str, Any]:
    state, _ = _state(ctx, model)
    if not state.get("latest"):
        raise NotFound(f"no monitoring report for model {model!r} yet")
    return state


def _report(ctx: Context, name: str) -> MonitoringReport:
    found = get_json(ctx.storage, CONTAINER, name)
    if found is None:
        raise NotFound(f"monitoring report {name!r} not found")
    return found[0]


def latest_report(ctx: Context, model: str, fmt: str = "json") -> bytes:
    """The latest committed report as JSON, or its HTML page rendered from it now.

    Both carry ``last_conclusive``: the last verdict that was not ``insufficient_data``,
    with its time, so a quiet window never hides the verdict before it.
    """
    state = _committed(ctx, model)
    report = _report(ctx, state["latest"]["report"])
    report["last_conclusive"] = state.get("last_conclusive")
    if fmt == "html":
        return render(report).encode()
    return dumps(report)


def report_id(name: str) -> str:
    """The id of a report the history names: its folder, ``<window end>-<suffix>``."""
    return name.split("/")[-2]


def report_by_id(ctx: Context, model: str, rid: str, fmt: str = "json") -> bytes:
    """One report of the history, as JSON or as its HTML page rendered now."""
    if not re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}", rid):
        raise InvalidRequest(f"invalid report id {rid[:80]!r}", field="report_id")
    report = _report(ctx, f"{model}/{rid}/{REPORT}")
    if fmt == "html":
        return render(report).encode()
    return dumps(report)


def report_history(ctx: Context, model: str, limit: int = HISTORY) -> dict[str, Any]:
    """The model's recorded runs, newest first, with the latest and the last conclusive one."""
    state = _committed(ctx, model)
    history = [{**e, "id": report_id(e["report"])} for e in state.get("history", [])[-limit:][::-1]]
    return {"model": model, "latest": state["latest"], "last_conclusive": state.get("last_conclusive"),
            "reports": history}


# -- retraining ------------------------------------------------------------------------------
def handle_retrain(ctx: Context, msg: RunMessage, now: float | None = None, lookback_days: int = 7) -> str | None:
    """Assemble a retraining dataset by the spec's policy and drop it into ``datasets/``."""
    now = time.time() if now is None else now
    model = msg.model
    spec = ctx.specs.get(model)
    file = f"{msg.run_id}.parquet"
    name = datasets.blob_name(model, file)
    if datasets.exists(ctx.storage, name):
        return datasets.path(name)  # a redelivered request: the dataset is already there
    versions = ctx.registry.versions(model)
    if not versions:
        return None
    # Production's dataset: the newest registered version may be one the gate refused or a
    # rollout rolled back (a bad drop into datasets/ would become every retraining's base).
    production = ctx.registry.alias(model)
    manifest = ctx.registry.manifest(model, production.version if production else versions[-1])
    source = datasets.DatasetRef.parse(manifest["dataset"]["name"]).name
    # here: pandas and the dataset reader, which the serving app (it reads reports here) lacks
    import pandas as pd

    from shared.pipeline.data import ORIGIN_COLUMN, read_table, validate  # here: pandas, as above

    # Typed as training types it, with missing categories still null: apart from '' for its profile.
    base = validate(read_table(datasets.read(ctx.storage, source).data, source), spec, source,
                    max_chars=ctx.settings.max_string_chars).with_missing()
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
        datasets.drop(ctx.storage, model, file, buf.getvalue(), create_only=True)
    except AlreadyExists:
        pass
    log.info("retraining %s: %d rows (%d labelled from live traffic) -> %s", model, len(frame), len(fresh),
             datasets.path(name))
    return datasets.path(name)
