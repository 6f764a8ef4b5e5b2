"""What became of every dataset, run and version: the read side the runs API, the console
and ``ops`` share. It reads through each container's owner (runs, registry, quarantine,
monitoring) and writes nothing.
"""
from __future__ import annotations

from typing import Any

from shared.context import Context
from shared.core.errors import NotFound
from shared.registry import quarantine
from shared.registry.runs import OUTCOMES, outcome_of
from shared.registry.store import PRODUCTION

__all__ = ["OUTCOMES", "overview", "run_detail", "runs_of", "version_lineage"]


def _quarantined_without_run(ctx: Context, model: str) -> list[dict[str, Any]]:
    """Quarantine records of ``model`` that no run stands for (a bad file name, say)."""
    out = []
    for record in quarantine.records(ctx.storage, model):
        if (record.get("details") or {}).get("run_id"):
            continue  # its run is listed with this outcome already
        out.append({
            "run_id": None,
            "outcome": "quarantined",
            "state": "quarantined",
            "explanation": f"{record['dataset']} was quarantined: {record['reason']}",
            "dataset": {"name": record["dataset"]},
            "created_at": record.get("quarantined_at"),
            "updated_at": record.get("quarantined_at"),
            "error": {"stage": "validate", "code": record.get("code"), "message": record.get("reason")},
            "quarantine": record["record"],
            "superseded_by": record.get("superseded_by"),
        })
    return out


def runs_of(ctx: Context, model: str, *, outcome: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Every run of ``model``, newest first, optionally of one outcome."""
    listed = [ctx.runs.summary(s) for s in ctx.runs.statuses(model)]
    _with_live_rollout(ctx, model, listed)
    listed += _quarantined_without_run(ctx, model)
    if outcome is not None:
        listed = [r for r in listed if r["outcome"] == outcome]
    listed.sort(key=lambda r: r.get("created_at") or 0, reverse=True)
    return listed[:limit]


def _with_live_rollout(ctx: Context, model: str, runs: list[dict[str, Any]]) -> None:
    """The run whose version is in rollout shows where the rollout is now (its status document
    notes only transitions an operator or an ending makes; the state has every step)."""
    # here: the runs API imports lineage at the serving app's start-up; the rollout modules
    # (~0.07 s) load with the first view that needs them
    from shared.registry.rollouts import RolloutStore
    from shared.rollout.loop import describe
    from shared.rollout.operate import traffic

    stored = RolloutStore(ctx.storage).read(model)
    if stored is None:
        return
    state = stored.state
    for run in runs:
        if run.get("run_id") == state.run_id and run.get("version") == state.candidate:
            run["rollout"] = {**(run.get("rollout") or {}), "status": state.status, "candidate": state.candidate,
                              "champion": state.champion, "summary": describe(state), "reason": state.reason,
                              "traffic": traffic(state), "updated_at": state.updated_at,
                              "view": f"/api/models/{model}/rollout"}


def run_detail(ctx: Context, model: str, run_id: str) -> dict[str, Any]:
    """One run with its lineage (``RunStore.describe``) and, in rollout, where the rollout is."""
    out = ctx.runs.describe(model, run_id)
    listed = [out]
    _with_live_rollout(ctx, model, listed)
    return out


def version_lineage(ctx: Context, model: str, version: int) -> dict[str, Any]:
    """A version back to its origins: run, dataset, spec, code and libraries, decision, rollout."""
    # here: the rollout modules (~0.07 s) load with the first view that needs them
    from shared.rollout.operate import of_version

    manifest = ctx.registry.manifest(model, version)
    run_id = manifest["run_id"]
    status = ctx.runs.status(model, run_id) or {}
    return {
        "model": model,
        "version": version,
        "run_id": run_id,
        "run": f"/api/models/{model}/runs/{run_id}",
        "dataset": {k: manifest["dataset"].get(k) for k in ("name", "etag", "sha256", "rows", "bytes")},
        "spec": manifest.get("spec"),
        "estimator": manifest.get("estimator"),
        "params": manifest.get("params"),
        "metrics": manifest.get("metrics"),
        "code": manifest.get("code"),
        "libraries": manifest.get("libraries"),
        "onnx": manifest.get("onnx"),
        "input_schema": manifest.get("input_schema"),
        "classes": manifest.get("classes"),  # a classifier's labels in the order of its probabilities
        "committed_at": manifest.get("committed_at"),
        "decision": ctx.registry.decision(model, version) or status.get("decision"),
        "aliases": [a for a, v in ctx.registry.aliases(model).items() if v == version],
        # its rollout as the candidate, with every step's decision (a version is rolled out at most once)
        "rollout": of_version(ctx, model, version),
    }


def _last_monitoring(ctx: Context, model: str) -> dict[str, Any] | None:
    """The newest run of the monitoring history (the committed state: one read, no report)."""
    # here: the monitor's module brings numpy (0.18 s); only report views need it
    from shared.monitoring.monitor import report_history

    try:
        [last] = report_history(ctx, model, 1)["reports"] or [None]
    except NotFound:
        return None
    if last is None:
        return None
    return {"verdict": last["verdict"], "at": last["generated_at"], "rows": last["rows"],
            "drift_share": last["drift_share"], "headline": last.get("headline")}


def _live_rollout(ctx: Context, model: str) -> dict[str, Any] | None:
    """The model's rollout while it is live, in a line (the console's overview)."""
    # here: the rollout modules (~0.07 s) load with the first view that needs them
    from shared.rollout.loop import describe, live_rollout

    state = live_rollout(ctx, model)
    if state is None:
        return None
    return {"status": state.status, "candidate": state.candidate, "summary": describe(state)}


def overview(ctx: Context) -> list[dict[str, Any]]:
    """One line per model: production version, last run and decision, last drift verdict, traffic,
    live rollout."""
    out = []
    for model in sorted(set(ctx.specs.names()) | set(ctx.registry.models())):
        statuses = ctx.runs.statuses(model)
        decided = next((s for s in statuses if s.get("decision")), None)
        alias = ctx.registry.alias(model, PRODUCTION)
        out.append({
            "name": model,
            "production": alias.version if alias else None,
            "versions": len(ctx.registry.versions(model)),
            "runs": len(statuses),
            "last_run": ctx.runs.summary(statuses[0]) if statuses else None,
            "failed_runs": sum(outcome_of(s) in ("failed", "quarantined") for s in statuses),
            "last_decision": decided["decision"] if decided else None,
            "monitoring": _last_monitoring(ctx, model),
            "rollout": _live_rollout(ctx, model),
        })
    return out
