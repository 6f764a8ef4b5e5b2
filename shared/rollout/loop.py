"""The rollout loop: start a rollout, judge each active one, carry the decision out; and the
operator's actions (pause, resume, abort, promote-now).

State lives only in storage (``RolloutStore``): a restarted host, or another instance, picks a
rollout up exactly where the last write left it. Every write is conditional on the ETag read,
so two evaluator runs at once never advance twice: the loser re-reads and finds the decision
taken. The rules (``docs/rollout.md``):

* one rollout per model; a newer candidate arriving mid-rollout supersedes the one in rollout
  (recorded ``superseded``) and starts from the first step; an older one never replaces a newer;
* a candidate whose inputs differ from production's is never rolled out automatically;
* the first version (no production) and ``mode = "direct"`` are promoted at once, as before;
* a production alias moved by anyone else mid-rollout (an operator's promote or rollback) ends
  the rollout, recorded as ended by the operator;
* the monitor requests no retraining while a rollout is live (``live_rollout``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from shared.context import Context
from shared.core.errors import Conflict, NotFound, PreconditionFailed
from shared.core.rollout_spec import step_label
from shared.policies.rollout import ADVANCE, DIRECT, HELD, PROMOTE, ROLLBACK, WAIT, RolloutDecision, decide, plan
from shared.registry.rollouts import (
    ABORTED,
    ACTIVE,
    LIVE,
    PAUSED,
    PROMOTED,
    PROMOTING,
    ROLLED_BACK,
    SUPERSEDED,
    RolloutState,
    RolloutStore,
    Started,
    Stored,
)
from shared.registry.store import PRODUCTION, Alias

log = logging.getLogger("mlops.rollout")

#: Who moves the production alias when a rollout promotes (the alias record's ``actor``).
ACTOR = "rollout"
MAX_ATTEMPTS = 8


def store(ctx: Context) -> RolloutStore:
    return RolloutStore(ctx.storage)


def live_rollout(ctx: Context, model: str) -> RolloutState | None:
    """The model's rollout while it owns the model (active, paused or promoting), else None."""
    stored = store(ctx).read(model)
    return stored.state if stored is not None and stored.state.live else None


def _record(action: str, reason: str, now: float, step: int, **extra: Any) -> dict[str, Any]:
    return {"action": action, "at": now, "step": step, "reason": reason, **extra}


# -- starting --------------------------------------------------------------------------------
def start_rollout(ctx: Context, model: str, candidate: int, champion: int, *, run_id: str | None = None,
                  offline: str = "", actor: str = "pipeline", force: bool = False,
                  now: float | None = None, note: str = "") -> Started:
    """Start ``candidate``'s rollout against production ``champion`` (the offline gate passed).

    Idempotent. ``force`` (an operator's audited action) starts a candidate whose input
    contract differs; ``direct`` mode starts nothing (the caller promotes). ``note`` (an
    operator's words) is added to the start's reason, kept in its record and audit entry.
    """
    spec = ctx.specs.get(model).rollout
    mode, reason = plan(spec, ctx.registry.manifest(model, champion)["input_schema"],
                        ctx.registry.manifest(model, candidate)["input_schema"], candidate=candidate,
                        champion=champion, offline=offline, force=force, actor=actor)
    if mode in (DIRECT, HELD):
        return Started(False, reason)
    if note:
        reason = f"{reason}; {note}"
    result = store(ctx).start(model, candidate, champion, mode=mode, steps=spec.steps, reason=reason, actor=actor,
                              run_id=run_id, now=now)
    if result.superseded is not None:
        _run_note(ctx, result.superseded, SUPERSEDED, result.superseded.reason)
    if result.started and result.state is not None and result.state.status == ACTIVE:
        _run_note(ctx, result.state, ACTIVE, result.state.reason)
        log.info("%s: %s", model, result.reason)
    return result


def _run_note(ctx: Context, state: RolloutState, status: str, reason: str) -> None:
    """The run that made the candidate says what became of its rollout (best effort)."""
    if not state.run_id:
        return
    changes: dict[str, Any] = {"rollout": {"status": status, "reason": reason, "candidate": state.candidate}}
    if status == ACTIVE:
        changes["state"] = "rollout"  # an operator's start or resume: the run's version is in rollout again
    elif status == PROMOTED:
        changes["state"] = "promoted"
    elif status in (ROLLED_BACK, SUPERSEDED, ABORTED):
        changes["state"] = "rejected"
    try:
        ctx.runs.update_status(state.model, state.run_id, **changes)
    except Exception:  # noqa: BLE001 - the rollout's own record is the truth; this is a pointer
        log.warning("could not note the rollout of %s v%s in run %s", state.model, state.candidate, state.run_id)


# -- judging ---------------------------------------------------------------------------------
def evaluate_all(ctx: Context, now: float | None = None) -> dict[str, str]:
    """Judge every model's live rollout; one model's failure does not stop the rest."""
    out = {}
    for model in ctx.specs.names():
        try:
            result = evaluate_rollout(ctx, model, now)
            if result is not None:
                out[model] = f"{result['action']}: {result['reason']}"
        except Exception as exc:  # noqa: BLE001 - reported per model
            log.exception("evaluating the rollout of %s failed", model)
            out[model] = f"failed: {exc}"
    return out


def _prediction_std(ctx: Context, model: str, version: int) -> float:
    """The spread of ``version``'s predictions on its hold-out (its reference profile), or 0."""
    try:
        return float(ctx.registry.profile(model, version)["prediction"].get("std") or 0.0)
    except NotFound:
        return 0.0


def evaluate_rollout(ctx: Context, model: str, now: float | None = None) -> dict[str, Any] | None:
    """Judge ``model``'s live rollout once and carry the decision out; None when none is live.

    Returns the action taken and its reason (with the figures, for the timer's log).
    """
    # here: the evidence brings pyarrow, pandas and scikit-learn's metrics; the serving app
    # imports this module for the operator actions
    from shared.monitoring.monitor import settle_seconds
    from shared.rollout.evidence import gather

    rollouts = store(ctx)
    stored = rollouts.read(model)
    if stored is None or not stored.state.live:
        return None
    state = stored.state
    now = time.time() if now is None else now
    alias = ctx.registry.alias(model, PRODUCTION)
    ended = _ended_by_operator(ctx, stored, alias, now)
    if ended is not None:
        return ended
    if state.status == PROMOTING:
        return _finish_promotion(ctx, stored, alias, now)
    spec = ctx.specs.get(model)
    prod = ctx.server.get_version(model, state.champion)
    cand = ctx.server.get_version(model, state.candidate)
    evidence = gather(ctx.storage, spec, state, prod, cand, until=now - settle_seconds(ctx), now=now,
                      reference_std=_prediction_std(ctx, model, state.champion))
    decision = decide(state, evidence, spec.rollout, now)
    try:
        return _carry_out(ctx, stored, decision, alias, now)
    except PreconditionFailed:
        # Another evaluator (or an operator) wrote first: its decision stands; judge again next time.
        log.info("%s: the rollout state changed while judging; leaving it to the writer", model)
        return {"action": "none", "reason": "another evaluator decided first"}


def _carry_out(ctx: Context, stored: Stored, decision: RolloutDecision, alias: Alias | None,
               now: float) -> dict[str, Any]:
    rollouts = store(ctx)
    state, record = stored.state, decision.record(now)
    if decision.action == WAIT:
        rollouts.write(replace(decision.state, last_evaluation=record), stored, event=None, actor=ACTOR)
        return {"action": WAIT, "reason": decision.reason}
    nxt = decision.state.with_decision(record, last_evaluation=record)
    written = rollouts.write(nxt, stored, event=f"rollout_{decision.action}", actor=ACTOR, decision=record)
    log.info("%s v%s: %s", state.model, state.candidate, decision.reason)
    if decision.action == ROLLBACK:
        _run_note(ctx, nxt, ROLLED_BACK, decision.reason)
        breaches = [c.to_dict() for c in decision.checks if c.breached]
        ctx.alert(state.model, "rollout_rolled_back", {"version": state.candidate, "champion": state.champion,
                                                       "reason": decision.reason, "breaches": breaches})
        ctx.telemetry.run_outcome(state.model, "rolled_back")
    elif decision.action == PROMOTE:
        return _finish_promotion(ctx, written, alias, now)
    elif decision.action == ADVANCE:
        pass  # routing reads the new step from the state
    return {"action": decision.action, "reason": decision.reason}


def _finish_promotion(ctx: Context, stored: Stored, alias: Alias | None, now: float,
                      actor: str = ACTOR) -> dict[str, Any]:
    """Move production to the candidate (the registry's own path: If-Match, audited) and record
    the rollout promoted. A crash between the two leaves ``promoting``, finished by the next run."""
    state = stored.state
    if alias is None or alias.version != state.candidate:
        try:
            ctx.registry.move_alias(
                state.model, PRODUCTION, state.candidate, expected=alias, event="promote", actor=actor,
                reason=state.reason or f"rollout of v{state.candidate} passed every step",
                details={"rollout": {"candidate": state.candidate, "champion": state.champion,
                                     "steps": list(state.steps), "started_at": state.started_at},
                         "run_id": state.run_id})
        except PreconditionFailed:
            return {"action": "none", "reason": "production moved while promoting; judged again next time"}
    reason = f"v{state.candidate} is production: {state.reason}"
    done = state.with_decision(_record("promoted", reason, now, state.step), status=PROMOTED, updated_at=now,
                               reason=reason)
    store(ctx).write(done, stored, event=None, actor=ACTOR)
    _run_note(ctx, done, PROMOTED, reason)
    ctx.telemetry.run_outcome(state.model, "promoted")
    return {"action": PROMOTE, "reason": reason}


def _ended_by_operator(ctx: Context, stored: Stored, alias: Alias | None, now: float) -> dict[str, Any] | None:
    """End the rollout if production was moved by someone other than this rollout."""
    state = stored.state
    if alias is not None and alias.version == state.champion:
        return None
    if alias is not None and alias.version == state.candidate and state.status == PROMOTING:
        return None  # this rollout's own promotion, not yet recorded: ``_finish_promotion`` completes it
    where = f"v{alias.version}" if alias is not None else "nothing"
    who = (alias.record.get("actor") if alias is not None else None) or "an operator"
    reason = f"ended by the operator: production was moved to {where} by {who} mid-rollout"
    ended = state.with_decision(_record("ended", reason, now, state.step, production=alias and alias.version),
                                status=ABORTED, updated_at=now, reason=reason)
    try:
        store(ctx).write(ended, stored, event="rollout_ended", actor=str(who), decision={"reason": reason})
    except PreconditionFailed:
        return {"action": "none", "reason": "another evaluator decided first"}
    _run_note(ctx, ended, ABORTED, reason)
    return {"action": "ended", "reason": reason}


def reconcile(ctx: Context, model: str, now: float | None = None) -> dict[str, Any] | None:
    """After an admin alias move: end the model's live rollout at once if production moved
    under it (the evaluator would on its next run)."""
    stored = store(ctx).read(model)
    if stored is None or not stored.state.live:
        return None
    return _ended_by_operator(ctx, stored, ctx.registry.alias(model, PRODUCTION), time.time() if now is None else now)


# -- the operator's actions ------------------------------------------------------------------
def same_etag(a: str, b: str) -> bool:
    """Whether two ETags name the same write (quotes and a weak ``W/`` prefix aside)."""
    def bare(tag: str) -> str:
        return tag.strip().removeprefix("W/").strip('"')
    return bare(a) == bare(b)


def _operator(ctx: Context, model: str, action: str, actor: str, reason: str, allowed: frozenset[str],
              change: Any, if_match: str | None = None) -> RolloutState:
    """Apply ``change(state, now) -> state`` to the live rollout, If-Match, audited.

    ``if_match`` (the ETag the operator read): the action applies only to that state; any write
    since (an evaluation, another operator) refuses it with ``PreconditionFailed``, naming where
    the rollout is now. Without it the action applies to the state as it is, re-read after a
    lost race, as long as the action still applies (else ``Conflict``).
    """
    rollouts = store(ctx)
    for _ in range(MAX_ATTEMPTS):
        stored = rollouts.read(model)
        if stored is None:
            raise NotFound(f"model {model!r} has no rollout")
        state = stored.state
        if if_match is not None and not same_etag(if_match, stored.etag):
            raise PreconditionFailed(
                f"the rollout of {model} changed since it was read: it is now {describe(state)}; read it again "
                "and retry", etag=stored.etag)
        if state.status not in allowed:
            raise Conflict(f"cannot {action.replace('_', '-')} the rollout of {model} v{state.candidate}: it is "
                           f"{state.status}", status=state.status)
        now = time.time()
        words = f"{action} by {actor}" + (f": {reason}" if reason else "")
        nxt = change(state, now)
        nxt = nxt.with_decision(_record(action, words, now, nxt.step, actor=actor), updated_at=now, reason=words)
        try:
            rollouts.write(nxt, stored, event=f"rollout_{action}", actor=actor, decision={"reason": words})
        except PreconditionFailed:
            if if_match is not None:
                raise PreconditionFailed(f"the rollout of {model} changed while {action.replace('_', '-')} was "
                                         "applied; read it again and retry") from None
            continue
        _run_note(ctx, nxt, nxt.status, words)
        return nxt
    raise PreconditionFailed(f"the rollout state of {model} kept changing; gave up after {MAX_ATTEMPTS} attempts")


def describe(state: RolloutState) -> str:
    """Where a rollout stands, in words: ``v2 active at step 2 of 3 (25%)``."""
    return (f"v{state.candidate} {state.status} at step {state.step + 1} of {len(state.steps)} "
            f"({step_label(state.current_step)})")


def pause(ctx: Context, model: str, *, actor: str, reason: str = "",
          if_match: str | None = None) -> RolloutState:
    """Hold the rollout at its current split: no step advances; guardrails still roll back."""
    return _operator(ctx, model, "pause", actor, reason, frozenset({ACTIVE}),
                     lambda s, now: replace(s, status=PAUSED), if_match)


def resume(ctx: Context, model: str, *, actor: str, reason: str = "",
           if_match: str | None = None) -> RolloutState:
    """Go on from the paused step; its bake starts again (no credit for time spent paused)."""
    return _operator(ctx, model, "resume", actor, reason, frozenset({PAUSED}),
                     lambda s, now: replace(s, status=ACTIVE, step_started_at=now), if_match)


def abort(ctx: Context, model: str, *, actor: str, reason: str = "",
          if_match: str | None = None) -> RolloutState:
    """End the rollout: the candidate gets no more traffic; production is unchanged."""
    return _operator(ctx, model, "abort", actor, reason, frozenset({ACTIVE, PAUSED}),
                     lambda s, now: replace(s, status=ABORTED), if_match)


def promote_now(ctx: Context, model: str, *, actor: str, reason: str = "",
                if_match: str | None = None) -> RolloutState:
    """Promote the candidate now, whatever step it is at (``shadow`` mode's way out)."""
    state = _operator(ctx, model, "promote_now", actor, reason, frozenset({ACTIVE, PAUSED}),
                      lambda s, now: replace(s, status=PROMOTING), if_match)
    stored = store(ctx).read(model)
    if stored is not None and stored.state.status == PROMOTING:
        _finish_promotion(ctx, stored, ctx.registry.alias(model, PRODUCTION), time.time(), actor=actor)
        done = store(ctx).read(model)
        return done.state if done is not None else state
    return state


__all__ = ["LIVE", "Started", "abort", "describe", "evaluate_all", "evaluate_rollout", "live_rollout", "pause",
           "promote_now", "reconcile", "resume", "same_etag", "start_rollout"]
