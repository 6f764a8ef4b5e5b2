"""The promotion policy: whether a registered candidate replaces production, and why.

A pure function of the candidate, the champion (production, or none) and the evidence the
pipeline gathered (both versions scored on the rows neither trained on: the candidate's
hold-out and the exam). No I/O: the promote stage gathers the evidence
(``shared.pipeline.evidence``), calls :func:`decide`, and carries the decision out.

The rule:

* every set with rows must pass: the candidate clears the spec's floor, then is no worse than
  production by more than the spec's margin (relative to production's score); the candidate's
  own hold-out must always be scored;
* the first version (no production yet) is judged on the floor alone;
* a candidate whose input contract differs from production's (a feature removed, added, renamed
  or retyped) is never promoted automatically: callers of production would break. The decision
  names the fields; an operator can still promote it by moving the alias (an audited move);
* a candidate that production could not be scored against is never promoted on the floor alone:
  without a comparison there is no evidence it is no worse.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.core.records import DecisionSet, SchemaField
from shared.core.spec import ModelSpec


@dataclass(frozen=True)
class Rule:
    """The spec's promotion parameters: the metric, its direction, the floor and the margin."""

    metric: str
    higher_is_better: bool
    floor: float
    margin: float

    @classmethod
    def of(cls, spec: ModelSpec) -> Rule:
        """The rule a model's spec declares."""
        return cls(spec.metric, spec.higher_is_better, spec.floor, spec.margin)


@dataclass(frozen=True)
class Version:
    """A registered version as the policy sees it: its number, its input contract and (a
    classifier) the classes it answers."""

    version: int
    input_schema: Sequence[SchemaField] = ()
    classes: Sequence[Any] | None = None


@dataclass(frozen=True)
class SetScores:
    """Both versions' metrics on one set of rows neither trained on (``None``: not computable)."""

    key: str  # holdout | exam
    label: str  # how the reason names the set
    rows: int
    rows_total: int
    candidate: dict[str, float] | None
    production: dict[str, float] | None
    sources: int | None = None  # the exam: how many datasets its rows came from


@dataclass(frozen=True)
class Evidence:
    """What the pipeline measured for a decision."""

    sets: tuple[SetScores, ...]
    unseen_fraction: float | None = None
    split_caveat: str | None = None  # why rows production trained on could not be excluded
    production_error: str | None = None  # why production could not be scored


@dataclass(frozen=True)
class Decision:
    """The verdict and its reason, with the per-set results the decision record keeps."""

    promoted: bool
    reason: str
    sets: dict[str, DecisionSet] = field(default_factory=dict)
    unseen_fraction: float | None = None
    contract_changes: tuple[str, ...] = ()


def judge(rule: Rule, candidate: float, champion: float | None,
          where: str = "the candidate's hold-out") -> tuple[bool, str]:
    """The rule on one set of rows: clear the floor; then be no worse than production by the margin."""
    metric, higher = rule.metric, rule.higher_is_better
    clears_floor = candidate >= rule.floor if higher else candidate <= rule.floor
    if not clears_floor:
        op = ">=" if higher else "<="
        return False, f"{metric} {candidate:.6g} on {where} does not clear the floor ({op} {rule.floor:g})"
    if champion is None:
        return True, f"{metric} {candidate:.6g} on {where} clears the floor {rule.floor:g}"
    allowance = rule.margin * abs(champion)
    ok = candidate >= champion - allowance if higher else candidate <= champion + allowance
    verdict = "matches or beats" if ok else "is worse than"
    return ok, f"{metric} {candidate:.6g} {verdict} production's {champion:.6g} on {where} (margin {rule.margin:g})"


def contract_changes(production: Sequence[SchemaField], candidate: Sequence[SchemaField]) -> tuple[str, ...]:
    """How the candidate's input contract differs from production's, one entry per field:
    ``removed x``, ``added y``, ``retyped z (double -> string)``. A renamed feature shows as one
    removed and one added. Order is the contracts' own; empty when they agree."""
    before = {f["name"]: f.get("type") for f in production}
    after = {f["name"]: f.get("type") for f in candidate}
    out = [f"removed {n!r}" for n in before if n not in after]
    out += [f"added {n!r}" for n in after if n not in before]
    out += [f"retyped {n!r} ({before[n]} -> {after[n]})" for n in before if n in after and before[n] != after[n]]
    return tuple(out)


def class_changes(production: Sequence[Any] | None, candidate: Sequence[Any] | None) -> tuple[str, ...]:
    """How the candidate's classes differ from production's (as text: the labels clients see),
    ``removed class 'barolo'``, ``added class '0'``; empty when they agree or either has none."""
    if production is None or candidate is None:
        return ()
    before, after = [str(c) for c in production], [str(c) for c in candidate]
    return tuple([f"removed class {c!r}" for c in before if c not in after]
                 + [f"added class {c!r}" for c in after if c not in before])


def decide(rule: Rule, candidate: Version, champion: Version | None, evidence: Evidence) -> Decision:
    """Whether ``candidate`` replaces ``champion`` (production; None: there is none), and why."""
    if champion is not None and champion.version == candidate.version:
        return Decision(True, "already production")
    sets: dict[str, DecisionSet] = {}
    passed, reasons = True, []
    for scores in evidence.sets:
        entry: DecisionSet = {"rows": scores.rows, "rows_total": scores.rows_total,
                              "candidate": scores.candidate, "production": scores.production}
        if scores.candidate is None:
            entry["passed"] = None
            entry["reason"] = f"no rows of {scores.label} that neither version trained on could be scored"
        else:
            ok, why = judge(rule, scores.candidate[rule.metric],
                            scores.production[rule.metric] if scores.production else None,
                            f"{scores.label} ({scores.rows} rows)")
            entry["passed"], entry["reason"] = ok, why
            passed = passed and ok
        if scores.sources is not None:
            entry["sources"] = scores.sources
        reasons.append(entry["reason"])
        sets[scores.key] = entry
    if sets.get("holdout", {}).get("passed") is None:
        passed = False  # the candidate's own hold-out must always be scored
    reason = "; ".join(reasons + [n for n in (evidence.split_caveat, evidence.production_error) if n])
    if champion is None:
        return Decision(passed, "first version: " + reason, sets, evidence.unseen_fraction)
    changes = contract_changes(champion.input_schema, candidate.input_schema)
    if changes:
        passed = False
        reason += (f"; its input contract differs from production v{champion.version}'s ({', '.join(changes)}): "
                   "never promoted automatically; an operator may promote it by moving the production alias")
    classes = class_changes(champion.classes, candidate.classes)
    if classes:
        passed = False
        changes += classes
        reason += (f"; its classes differ from production v{champion.version}'s ({', '.join(classes)}): every "
                   "client's labels and probability keys would change, and production's metric on labels it "
                   "never answers says nothing: never promoted automatically; an operator may promote it by "
                   "moving the production alias")
    if evidence.production_error:
        passed = False
        reason += "; without production's score it is not promoted on the floor alone"
    return Decision(passed, reason, sets, evidence.unseen_fraction, changes)


def summary(decision: Decision) -> dict[str, Any]:
    """The candidate's and production's hold-out metrics, as the audit and the record name them."""
    hold = decision.sets.get("holdout") or {}
    return {"candidate_metrics": hold.get("candidate"), "champion_metrics": hold.get("production")}
