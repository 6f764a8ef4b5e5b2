"""The rollout policy of a model: spec table ``[rollout]``.

A version that passes the offline gate earns production on live traffic: first in shadow
(production answers every request; the candidate is replayed on the same rows by the
evaluator), then on a growing share of requests, each step baked for ``bake_seconds`` with
at least ``min_rows`` rows, and rolled back at once when a guardrail breaks. The defaults are
what a careful team would pick; every key is optional, an unknown key is refused.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.core.errors import SpecError

MODES = ("canary", "shadow", "direct")
SHADOW = "shadow"
DEFAULT_STEPS: tuple[str | float, ...] = (SHADOW, 5.0, 25.0, 50.0)
#: Divergence thresholds when the spec names none: mean absolute difference over production's
#: prediction standard deviation (regression), share of rows with another label (classification).
DEFAULT_DIVERGENCE = {"regression": 0.25, "classification": 0.10}

KEYS = frozenset({"mode", "steps", "bake_seconds", "min_rows", "min_latency_requests", "max_error_rate",
                  "max_latency_ratio", "latency_floor_ms", "max_divergence", "max_output_psi", "metric_margin",
                  "min_labelled_rows", "alpha", "routing_field"})


@dataclass(frozen=True)
class RolloutSpec:
    """How a new version is rolled out (spec table ``[rollout]``, with these defaults)."""

    #: ``canary``: shadow, then shares of traffic, promoted with no person involved;
    #: ``shadow``: mirrored only, a person promotes; ``direct``: promoted at once (as before).
    mode: str = "canary"
    #: ``"shadow"`` (first only) then percentages of traffic for the candidate, increasing, < 100.
    steps: tuple[str | float, ...] = DEFAULT_STEPS
    bake_seconds: float = 600.0
    #: Logged rows of the candidate (shadow: replayed rows) a step needs before it may pass.
    min_rows: int = 200
    #: Logged latency (canary steps): the requests each version must have answered in the step
    #: before their p99s are compared, and the step may pass. The p99 of 20 requests is the
    #: slowest of them, one hiccup of a busy machine; of 300, the fourth slowest.
    min_latency_requests: int = 300
    #: The candidate's error share may exceed production's by at most this much.
    max_error_rate: float = 0.01
    #: The candidate's p99 latency over production's p99 in the same window.
    max_latency_ratio: float = 1.5
    #: A latency difference under this many milliseconds is never a breach, whatever the ratio:
    #: replayed compute times are tens of microseconds, where a busy core alone makes 1.6x.
    latency_floor_ms: float = 0.05
    #: Regression: mean absolute difference over production's prediction std; classification:
    #: disagreement rate. The parser fills the task's default (``DEFAULT_DIVERGENCE``).
    max_divergence: float = DEFAULT_DIVERGENCE["regression"]
    #: PSI of the candidate's outputs against production's on the same rows.
    max_output_psi: float = 0.2
    #: Relative margin on the live metric; the parser fills the spec's ``[promotion] margin``.
    metric_margin: float = 0.0
    min_labelled_rows: int = 100
    #: Significance of the one-sided paired sign test on per-row losses.
    alpha: float = 0.05
    #: A feature whose value (in a request's first row) is the canary's routing key when the
    #: request has no ``x-routing-key`` header; None: the request's id (``shared.serving.routing``).
    routing_field: str | None = None


def step_label(step: str | float) -> str:
    """``"shadow"`` or ``"25%"``."""
    return SHADOW if step == SHADOW else f"{float(step):g}%"


def _steps(raw: Any, fail: Callable[[str, str], SpecError]) -> list[str | float]:
    """``steps``: ``"shadow"`` (first only), then increasing percentages in (0, 100)."""
    if not isinstance(raw, list) or not raw:
        raise fail("steps", "must be a non-empty list such as [\"shadow\", 5, 25, 50]")
    steps: list[str | float] = []
    for i, step in enumerate(raw):
        if step == SHADOW:
            if i != 0:
                raise fail("steps", "may hold \"shadow\" only as its first step")
            steps.append(SHADOW)
            continue
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < 100:
            raise fail("steps", f"step {i} must be \"shadow\" or a percentage in (0, 100), not {step!r}")
        if steps and steps[-1] != SHADOW and step <= steps[-1]:
            raise fail("steps", f"percentages must increase; step {i} ({step:g}) does not")
        steps.append(float(step))
    return steps


def parse_rollout(table: Any, source: str, *, is_classifier: bool = False,
                  promotion_margin: float = 0.0) -> RolloutSpec:
    """The ``[rollout]`` table of the spec at ``source`` (absent: every default); thresholds
    the spec leaves out that depend on the task or the promotion rule are filled here."""

    def fail(key: str, why: str) -> SpecError:
        return SpecError(f"{source}: key 'rollout.{key}' {why}", file=source, key=f"rollout.{key}")

    if table is None:
        table = {}
    if not isinstance(table, dict):
        raise SpecError(f"{source}: key 'rollout' must be a table", file=source, key="rollout")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise fail(unknown[0], f"is not a known key; allowed: {', '.join(sorted(KEYS))}")

    def number(key: str, default: float, low: float, high: float, *, integer: bool = False) -> Any:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise fail(key, f"must be {'an integer' if integer else 'a number'}, not {value!r}")
        if not (math.isfinite(value) and low <= value <= high):
            raise fail(key, f"must be between {low:g} and {high:g}, not {value!r}")
        return value if integer else float(value)

    mode = table.get("mode", "canary")
    if mode not in MODES:
        raise fail("mode", f"must be one of {', '.join(MODES)}, not {mode!r}")
    steps = _steps(table.get("steps", list(DEFAULT_STEPS)), fail)
    divergence = table.get("max_divergence")
    margin = table.get("metric_margin")
    routing_field = table.get("routing_field")
    if routing_field is not None and (not isinstance(routing_field, str) or not routing_field):
        raise fail("routing_field", f"must name a feature, not {routing_field!r}")
    return RolloutSpec(
        mode=mode,
        steps=tuple(steps),
        bake_seconds=number("bake_seconds", 600.0, 0, 7 * 86400),
        min_rows=number("min_rows", 200, 1, 10_000_000, integer=True),
        min_latency_requests=number("min_latency_requests", 300, 1, 10_000_000, integer=True),
        max_error_rate=number("max_error_rate", 0.01, 0, 1),
        max_latency_ratio=number("max_latency_ratio", 1.5, 1, 1000),
        latency_floor_ms=number("latency_floor_ms", 0.05, 0, 60_000),
        max_divergence=(DEFAULT_DIVERGENCE["classification" if is_classifier else "regression"]
                        if divergence is None else number("max_divergence", 0, 0, 1000)),
        max_output_psi=number("max_output_psi", 0.2, 0, 100),
        metric_margin=promotion_margin if margin is None else number("metric_margin", 0, 0, 0.999),
        min_labelled_rows=number("min_labelled_rows", 100, 1, 10_000_000, integer=True),
        alpha=number("alpha", 0.05, 1e-6, 0.5),
        routing_field=routing_field,
    )
