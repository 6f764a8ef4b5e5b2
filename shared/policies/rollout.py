"""The rollout policy: a rollout's state and its step's live evidence -> what to do, and why.

Pure: no I/O, no clock of its own (``now`` is passed in), no import beyond ``shared.core`` and
``shared.registry`` (for the state's type). The evaluator (``shared.rollout.loop``) reads the
evidence, calls :func:`decide` and writes the state it returns. A new policy (linear shifting,
say) is another ``decide`` here, with its tests; nothing else changes.

The rule, in plain words:

* **Roll back at once** when any guardrail breaks on the step's rows: the candidate's error
  share above production's by more than ``max_error_rate``; its p99 latency over production's
  in the same window above ``max_latency_ratio``; its predictions on the same rows diverging
  from production's beyond ``max_divergence`` (regression: mean absolute difference over
  production's prediction standard deviation; classification: disagreement rate) or their
  PSI beyond ``max_output_psi``; its live metric on the same labelled rows worse than
  production's beyond ``metric_margin`` *and* worse by a one-sided paired sign test on per-row
  losses at ``alpha`` (see :func:`sign_test`). Divergence and output PSI do not roll back a
  candidate that is *better* on enough labelled rows by the same paired test, reversed.
  Error, latency and divergence guardrails are judged once the step has ``min_rows`` rows (a
  p99 of five rows is noise); the metric once ``min_labelled_rows`` labelled rows exist.
* **Wait** while the step has fewer than ``min_rows`` rows ("waiting: 37 of 200 rows"), or (a
  canary step) either version has answered fewer than ``min_latency_requests`` requests, so
  their p99s are not comparable yet, or it has not baked ``bake_seconds``: never advance on no
  evidence.
* **Advance** one step when the step has baked clean with enough rows; **promote** after the
  last step passes. In ``shadow`` mode the rollout never advances or promotes: a person does
  (promote-now); guardrails still roll it back.
* A **paused** rollout holds its split and never advances; its guardrails still roll it back.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from shared.core.rollout_spec import RolloutSpec, step_label
from shared.registry.rollouts import ACTIVE, PAUSED, PROMOTING, ROLLED_BACK, RolloutState

WAIT, ADVANCE, PROMOTE, ROLLBACK = "wait", "advance", "promote", "rollback"
#: ``plan``'s answers besides a rollout mode: promote at once, or hold for an operator.
DIRECT, HELD = "direct", "held"


@dataclass(frozen=True)
class RolloutEvidence:
    """What the inference log and feedback say about one step's window (all instances).

    Counts are rows. ``candidate_rows`` are rows the candidate answered (canary) or was
    replayed on (shadow); ``paired_rows`` rows scored by both versions. A figure that could
    not be computed is None and its guardrail is not judged.
    """

    window_from: float
    window_to: float
    candidate_rows: int = 0
    production_rows: int = 0
    candidate_errors: int = 0
    production_errors: int = 0
    candidate_p99_ms: float | None = None
    production_p99_ms: float | None = None
    latency_source: str = "logged"  # logged (canary: as served) | replayed (shadow: compute time)
    #: Requests (not rows) behind each p99: logged, those each version answered in the window;
    #: replayed, those replayed through both.
    candidate_requests: int = 0
    production_requests: int = 0
    #: Logged: requests left out of the comparison, of a size (rows, in powers of two) the other
    #: version answered none of; the rest are weighted to the same mix of sizes.
    latency_unmatched_requests: int = 0
    #: Replayed latency: how many times it was measured (a breach is measured again, and the
    #: least damning measurement is the one judged).
    latency_measurements: int = 0
    paired_rows: int = 0
    divergence: float | None = None
    output_psi: float | None = None
    metric: str = ""
    higher_is_better: bool = False
    labelled_rows: int = 0
    candidate_metric: float | None = None
    production_metric: float | None = None
    #: Labelled rows where the candidate's loss is higher / lower than production's (ties out).
    worse_rows: int = 0
    better_rows: int = 0
    #: Why the candidate could not be replayed (it then counts every replayed row as an error).
    replay_error: str | None = None

    @property
    def candidate_error_rate(self) -> float | None:
        return self.candidate_errors / self.candidate_rows if self.candidate_rows else None

    @property
    def production_error_rate(self) -> float:
        return self.production_errors / self.production_rows if self.production_rows else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "candidate_error_rate": self.candidate_error_rate,
                "production_error_rate": self.production_error_rate}


@dataclass(frozen=True)
class Check:
    """One guardrail on one window: its figure against its threshold."""

    name: str
    figure: float | None
    threshold: float
    #: True: broken; False: clean; None: not judged (too few rows, or no figure).
    breached: bool | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RolloutDecision:
    """What to do (``wait``, ``advance``, ``promote``, ``rollback``), the state after, and why."""

    action: str
    state: RolloutState
    reason: str
    checks: tuple[Check, ...]
    evidence: RolloutEvidence

    def record(self, now: float) -> dict[str, Any]:
        """The decision record kept in the state's history and in the audit entry."""
        return {"action": self.action, "at": now, "step": self.state.step, "reason": self.reason,
                "checks": [c.to_dict() for c in self.checks], "evidence": self.evidence.to_dict()}


def sign_test(worse: int, better: int) -> float:
    """One-sided exact sign test: the chance of ``worse`` or more rows where the candidate's loss
    is higher, of ``worse + better`` untied rows, if each were a fair coin. Small p: the
    candidate is worse on more rows than chance explains.

    Chosen over a paired t-test (per-row losses are skewed, heavy-tailed) and a paired bootstrap
    (random, and costly at every evaluation): it is exact, assumption-free and costs one sum.
    """
    n = worse + better
    if n == 0:
        return 1.0
    # P(X >= worse), X ~ Binomial(n, 1/2), summed in log space so large n does not overflow.
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
            for k in range(worse, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def latency_breached(candidate_p99_ms: float | None, production_p99_ms: float | None, spec: RolloutSpec) -> bool:
    """The latency guardrail: the candidate's p99 over production's above ``max_latency_ratio``
    *and* more than ``latency_floor_ms`` slower."""
    if candidate_p99_ms is None or not production_p99_ms:
        return False
    return (candidate_p99_ms / production_p99_ms > spec.max_latency_ratio
            and candidate_p99_ms - production_p99_ms > spec.latency_floor_ms)


def latency_requests_missing(e: RolloutEvidence, spec: RolloutSpec) -> str | None:
    """Why logged latencies cannot be judged yet (too few requests of a version), or None."""
    if e.latency_source != "logged":
        return None
    short = [f"{who} {n}" for who, n in (("candidate", e.candidate_requests), ("production", e.production_requests))
             if n < spec.min_latency_requests]
    return (f"latency needs {spec.min_latency_requests} requests answered by each version, has "
            + " and ".join(short)) if short else None


def checks(evidence: RolloutEvidence, spec: RolloutSpec) -> tuple[Check, ...]:
    """Every guardrail on ``evidence``: errors, latency, divergence, output PSI, live metric."""
    e = evidence
    enough = e.candidate_rows >= spec.min_rows
    out = []
    rate = e.candidate_error_rate
    excess = None if rate is None else rate - e.production_error_rate
    detail = (f"{e.candidate_errors} of {e.candidate_rows} candidate rows failed"
              + (f" ({e.replay_error})" if e.replay_error else "")
              + f", production {e.production_errors} of {e.production_rows}")
    # A candidate that cannot be run at all is broken whatever the row count.
    judged = enough or (e.replay_error is not None and e.candidate_rows > 0)
    out.append(Check("error_rate", excess, spec.max_error_rate,
                     (excess > spec.max_error_rate) if judged and excess is not None else None, detail))
    ratio = e.candidate_p99_ms / e.production_p99_ms \
        if e.candidate_p99_ms is not None and e.production_p99_ms else None
    slower = latency_breached(e.candidate_p99_ms, e.production_p99_ms, spec)
    out.append(Check("latency_ratio", ratio, spec.max_latency_ratio,
                     slower if enough and ratio is not None and not latency_requests_missing(e, spec) else None,
                     f"p99 {_ms(e.candidate_p99_ms)} against production's {_ms(e.production_p99_ms)} "
                     f"over {e.candidate_requests} and {e.production_requests} requests "
                     f"({e.latency_source}"
                     + (f", of like sizes: {e.latency_unmatched_requests} requests of a size the other version "
                        "did not answer left out" if e.latency_unmatched_requests else "")
                     + (f", least of {e.latency_measurements} measurements" if e.latency_measurements > 1 else "")
                     + f"; differences under {spec.latency_floor_ms:g} ms never breach)"))
    out += _difference_checks(e, spec)
    out.append(_metric_check(e, spec))
    return tuple(out)


def _difference_checks(e: RolloutEvidence, spec: RolloutSpec) -> list[Check]:
    """Divergence and output PSI on the rows both versions scored.

    They say the candidate answers differently, with no labels to say which is right. A
    candidate better than production on enough labelled rows (by its metric and the paired
    test, the other way round) is different because it is better: not a breach."""
    paired_enough = e.paired_rows >= spec.min_rows
    better = better_on_labels(e, spec)
    excused = f"; explained: {better}" if better else ""
    return [Check("divergence", e.divergence, spec.max_divergence,
                  (e.divergence > spec.max_divergence and not better)
                  if paired_enough and e.divergence is not None else None,
                  f"on {e.paired_rows} rows scored by both" + excused),
            Check("output_psi", e.output_psi, spec.max_output_psi,
                  (e.output_psi > spec.max_output_psi and not better)
                  if paired_enough and e.output_psi is not None else None,
                  f"PSI of the candidate's outputs against production's on {e.paired_rows} rows" + excused)]


def better_on_labels(e: RolloutEvidence, spec: RolloutSpec) -> str | None:
    """Why the candidate is better than production on the step's labelled rows (its metric
    better and the one-sided sign test, reversed, below ``alpha``, on at least
    ``min_labelled_rows``), else None."""
    if e.candidate_metric is None or e.production_metric is None or e.labelled_rows < spec.min_labelled_rows:
        return None
    gain = e.production_metric - e.candidate_metric if not e.higher_is_better \
        else e.candidate_metric - e.production_metric
    p = sign_test(e.better_rows, e.worse_rows)
    if gain <= 0 or p >= spec.alpha:
        return None
    return (f"the candidate is better on {e.labelled_rows} labelled rows ({e.metric} {e.candidate_metric:.6g} "
            f"against {e.production_metric:.6g}; better on {e.better_rows}, worse on {e.worse_rows}, "
            f"sign test p={p:.3g})")


def _metric_check(e: RolloutEvidence, spec: RolloutSpec) -> Check:
    if e.candidate_metric is None or e.production_metric is None:
        return Check("live_metric", None, spec.metric_margin, None,
                     f"{e.labelled_rows} labelled rows (needs {spec.min_labelled_rows})")
    cand, prod = e.candidate_metric, e.production_metric
    # Relative shortfall: positive when the candidate is worse.
    gap = (prod - cand if e.higher_is_better else cand - prod) / max(abs(prod), 1e-12)
    p = sign_test(e.worse_rows, e.better_rows)
    detail = (f"{e.metric} {cand:.6g} against production's {prod:.6g} on the same {e.labelled_rows} labelled rows; "
              f"candidate worse on {e.worse_rows} rows, better on {e.better_rows} (sign test p={p:.3g}, "
              f"alpha {spec.alpha:g})")
    if e.labelled_rows < spec.min_labelled_rows:
        return Check("live_metric", gap, spec.metric_margin, None, detail + f"; needs {spec.min_labelled_rows} rows")
    return Check("live_metric", gap, spec.metric_margin, bool(gap > spec.metric_margin and p < spec.alpha), detail)


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g} ms"


def _fmt(c: Check) -> str:
    figure = "n/a" if c.figure is None else f"{c.figure:.4g}"
    return f"{c.name} {figure} > {c.threshold:g} ({c.detail})"


def decide(state: RolloutState, evidence: RolloutEvidence, spec: RolloutSpec, now: float) -> RolloutDecision:
    """The next state of ``state`` given its current step's ``evidence``.

    Only ``active`` and ``paused`` rollouts are judged; any other state is returned as it is
    with ``wait``.
    """
    found = checks(evidence, spec)
    step = state.current_step
    label = step_label(step)
    if state.status not in (ACTIVE, PAUSED):
        return RolloutDecision(WAIT, state, f"rollout is {state.status}; nothing to decide", found, evidence)
    breaches = [c for c in found if c.breached]
    if breaches:
        reason = f"rolled back at step {state.step + 1} ({label}): " + "; ".join(_fmt(c) for c in breaches)
        nxt = replace(state, status=ROLLED_BACK, updated_at=now, reason=reason)
        return RolloutDecision(ROLLBACK, nxt, reason, found, evidence)

    def wait(why: str) -> RolloutDecision:
        return RolloutDecision(WAIT, replace(state, updated_at=now), why, found, evidence)

    rows = evidence.paired_rows if step == "shadow" else evidence.candidate_rows
    if rows < spec.min_rows:
        what = "shadowed rows" if step == "shadow" else "rows answered by the candidate"
        return wait(f"waiting at step {state.step + 1} ({label}): {rows} of {spec.min_rows} {what}")
    missing = latency_requests_missing(evidence, spec)
    if missing:  # never advance on a guardrail not judged
        return wait(f"waiting at step {state.step + 1} ({label}): {missing}")
    baked = now - state.step_started_at
    if baked < spec.bake_seconds:
        return wait(f"baking step {state.step + 1} ({label}): {baked:.0f} of {spec.bake_seconds:g} s, "
                    f"{rows} rows, clean so far")
    if state.status == PAUSED:
        return wait(f"paused at step {state.step + 1} ({label}): clean with {rows} rows; resume to go on")
    if state.mode == "shadow":
        return wait(f"shadow mode: clean with {rows} rows over {baked:.0f} s; a person decides (promote-now)")
    if state.step + 1 >= len(state.steps):
        reason = (f"promoting: step {state.step + 1} ({label}), the last, passed clean with {rows} rows "
                  f"over {baked:.0f} s")
        return RolloutDecision(PROMOTE, replace(state, status=PROMOTING, updated_at=now, reason=reason), reason,
                               found, evidence)
    nxt_label = step_label(state.steps[state.step + 1])
    reason = (f"advancing to step {state.step + 2} ({nxt_label}): step {state.step + 1} ({label}) passed clean "
              f"with {rows} rows over {baked:.0f} s")
    nxt = replace(state, step=state.step + 1, step_started_at=now, updated_at=now, reason=reason)
    return RolloutDecision(ADVANCE, nxt, reason, found, evidence)


def contract_changes(production_schema: Sequence[Mapping[str, Any]],
                     candidate_schema: Sequence[Mapping[str, Any]]) -> list[str]:
    """How the candidate's inputs differ from production's, in words; empty if they match.

    A removed, added or retyped field changes what clients must send: such a candidate is
    never rolled out automatically.
    """
    prod = {c["name"]: c["type"] for c in production_schema}
    cand = {c["name"]: c["type"] for c in candidate_schema}
    out = [f"removes '{n}'" for n in prod if n not in cand]
    out += [f"adds '{n}'" for n in cand if n not in prod]
    out += [f"retypes '{n}' from {prod[n]} to {cand[n]}" for n in prod if n in cand and prod[n] != cand[n]]
    return out


def plan(spec: RolloutSpec, production_schema: Sequence[Mapping[str, Any]],
         candidate_schema: Sequence[Mapping[str, Any]], *,
         candidate: int, champion: int, offline: str = "", force: bool = False,
         actor: str = "pipeline") -> tuple[str, str]:
    """How a candidate that passed the offline gate against production goes on: ``(DIRECT,
    reason)`` promote at once; ``(HELD, reason)`` its input contract differs, so it is never
    rolled out automatically (``force``: an operator's audited start); else ``(mode, reason)``
    to start a rollout in."""
    if spec.mode == DIRECT:
        return DIRECT, "rollout mode is direct: promoted at once"
    changes = contract_changes(production_schema, candidate_schema)
    if changes and not force:
        return HELD, (f"held: v{candidate} changes the input contract ({'; '.join(changes)}); existing clients "
                      "would be refused, so it is never rolled out automatically: an operator starts it "
                      "(admin key, audited)")
    route = " → ".join(step_label(s) for s in spec.steps)
    reason = (f"rollout of v{candidate} against production v{champion} started ({spec.mode}: {route}"
              + (" → 100%)" if spec.mode == "canary" else "; a person promotes)")
              + (f"; offline: {offline}" if offline else "")
              + (f"; input contract changes accepted by {actor}: {'; '.join(changes)}" if changes else ""))
    return spec.mode, reason
