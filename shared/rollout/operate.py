"""What an operator sees of a rollout and what an operator does to it: the read side the
rollout API, the console and ``mlops rollout`` share, and one entry point for the actions.

The view is built from the state (``registry/<model>/rollout.json``) and the model's current
spec (the thresholds the evaluator judges against, as ``decide`` reads them). Actions go
through ``shared.rollout.loop``: each is If-Match on the state, audited with its actor and
reason, and refused with a clear error when it does not apply (docs/rollout.md, "Operating a
rollout").
"""
from __future__ import annotations

from typing import Any

from shared.context import Context
from shared.core.errors import Conflict, InvalidRequest, MlopsError, ModelNotFound, NotFound
from shared.core.rollout_spec import RolloutSpec, step_label
from shared.registry.rollouts import ACTIVE, PAUSED, RolloutState, RolloutStore
from shared.registry.store import PRODUCTION
from shared.rollout import loop

#: The actions of ``POST /api/models/{name}/rollout/{action}``, as the URL spells them.
ACTIONS = ("pause", "resume", "abort", "promote-now", "start")
#: Which actions apply to a rollout in each status (``start`` applies to a version, not a state).
APPLIES = {ACTIVE: ("pause", "abort", "promote-now"), PAUSED: ("resume", "abort", "promote-now")}
#: Each guardrail's threshold in the spec's ``[rollout]`` table.
THRESHOLDS = {"error_rate": "max_error_rate", "latency_ratio": "max_latency_ratio", "divergence": "max_divergence",
              "output_psi": "max_output_psi", "live_metric": "metric_margin"}


def _known(ctx: Context, model: str) -> None:
    if model not in ctx.specs.names() and not ctx.registry.versions(model):
        raise ModelNotFound(f"model {model!r} not found: no spec and no registered version")


def _spec(ctx: Context, model: str) -> RolloutSpec | None:
    try:
        return ctx.specs.get(model).rollout
    except MlopsError:  # a spec removed or broken since: the state still shows, without thresholds
        return None


def guardrails(state: RolloutState, spec: RolloutSpec | None) -> list[dict[str, Any]]:
    """Each guardrail's latest figure against its threshold (from the latest evaluation; before
    the first, the spec's thresholds with no figure)."""
    checks = (state.last_evaluation or {}).get("checks") or []
    if checks:
        return [{**c, "setting": THRESHOLDS.get(c.get("name"), "")} for c in checks]
    if spec is None:
        return []
    return [{"name": name, "figure": None, "threshold": float(getattr(spec, key)), "breached": None,
             "detail": "not evaluated yet", "setting": key} for name, key in THRESHOLDS.items()]


def traffic(state: RolloutState) -> dict[str, Any]:
    """The split routing applies now, with production's share beside the candidate's."""
    t = state.traffic()
    share = float(t["candidate_percent"])
    words = (f"production 100%, v{state.candidate} shadowed on the same rows" if t["shadow"]
             else f"production {100 - share:g}%, v{state.candidate} {share:g}%" if share
             else "production 100%")
    return {**t, "production": state.champion, "production_percent": 100.0 - share, "split": words}


def _history(state: RolloutState) -> list[dict[str, Any]]:
    """The decision records, each naming its step in words as well as by index."""
    out = []
    for record in state.history:
        step = record.get("step")
        label = step_label(state.steps[step]) if isinstance(step, int) and 0 <= step < len(state.steps) else None
        out.append({**record, "step_label": label})
    return out


def view(state: RolloutState, etag: str | None, spec: RolloutSpec | None) -> dict[str, Any]:
    """A rollout as an operator reads it: where it is, the split, the guardrails, the history."""
    last = state.last_evaluation or {}
    return {
        "model": state.model,
        "candidate": state.candidate,
        "champion": state.champion,
        "mode": state.mode,
        "status": state.status,
        "live": state.live,
        "summary": loop.describe(state),
        "step": {"index": state.step, "number": state.step + 1, "of": len(state.steps),
                 "label": step_label(state.current_step), "started_at": state.step_started_at},
        "steps": [step_label(s) for s in state.steps],
        "traffic": traffic(state),
        "guardrails": guardrails(state, spec),
        "last_evaluation": {k: last.get(k) for k in ("action", "at", "reason")} if last else None,
        "history": _history(state),
        "reason": state.reason,
        "run_id": state.run_id,
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "actions": list(APPLIES.get(state.status, ())),
        "etag": etag,
    }


def current(ctx: Context, model: str) -> dict[str, Any]:
    """``model``'s current (or last) rollout; ``NotFound`` naming the model when it never had one."""
    _known(ctx, model)
    stored = RolloutStore(ctx.storage).read(model)
    if stored is None:
        raise NotFound(f"model {model!r} has no rollout: none has started (a version that passes the offline gate "
                       "starts one when MLOPS_ROLLOUT is on)")
    return view(stored.state, stored.etag, _spec(ctx, model))


def of_version(ctx: Context, model: str, version: int) -> dict[str, Any] | None:
    """The rollout ``version`` had as the candidate (a version is rolled out at most once), or None."""
    state = RolloutStore(ctx.storage).archived(model, version)
    if state is None:
        return None
    out = view(state, None, _spec(ctx, model))
    for key in ("etag", "actions", "guardrails"):
        out.pop(key)
    return out


def act(ctx: Context, model: str, action: str, *, actor: str, reason: str, if_match: str | None = None,
        version: int | None = None) -> dict[str, Any]:
    """Carry out an operator's ``action`` (one of :data:`ACTIONS`) and return the rollout after it.

    ``if_match``: the ETag the operator read; the action applies only if nothing wrote since.
    ``start`` force-starts ``version``'s rollout against production (a candidate held for its
    input contract, say): audited, the operator's reason in the start's record.
    """
    _known(ctx, model)
    if action not in ACTIONS:
        raise InvalidRequest(f"action must be one of {', '.join(ACTIONS)}, not {action[:40]!r}", field="action")
    if action == "start":
        _start(ctx, model, version, actor=actor, reason=reason)
    else:
        fn = {"pause": loop.pause, "resume": loop.resume, "abort": loop.abort, "promote-now": loop.promote_now}[action]
        fn(ctx, model, actor=actor, reason=reason, if_match=if_match)
    return current(ctx, model)


def _start(ctx: Context, model: str, version: int | None, *, actor: str, reason: str) -> None:
    if version is None:
        raise InvalidRequest("field 'version' is required to start a rollout: the version to roll out", field="version")
    manifest = ctx.registry.manifest(model, version)  # NotFound naming the version
    if not ctx.settings.rollouts:  # nothing would route to it, judge it or end it
        raise Conflict(f"rollouts are off (MLOPS_ROLLOUT=off): v{version} cannot be rolled out; move the production "
                       "alias to promote it")
    production = ctx.registry.alias(model, PRODUCTION)
    if production is None:
        raise Conflict(f"{model} has no production version to roll v{version} out against: promote it instead")
    if production.version == version:
        raise Conflict(f"v{version} is production already: nothing to roll out")
    note = f"started by {actor}" + (f": {reason}" if reason else "")
    started = loop.start_rollout(ctx, model, version, production.version, actor=actor, force=True,
                                 run_id=manifest.get("run_id"), note=note)
    if not started.started or (started.state is not None and not started.state.live):
        # never twice: a version whose rollout ended (or was held) is not rolled out again
        raise Conflict(f"v{version} was not rolled out: {started.reason}")


__all__ = ["ACTIONS", "act", "current", "guardrails", "of_version", "traffic", "view"]
