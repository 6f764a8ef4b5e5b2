"""A monitoring report's headline: its verdict and what is behind it, in one line.

The verdict alone reads "ok" while a feature has drifted under the dataset threshold; the
headline names the drifted features whatever the verdict, so the JSON report, its HTML page,
the history and the console say the same thing:
``ok — 1 of 13 features drifted: alcohol; dataset threshold 50%``.
"""
from __future__ import annotations

from typing import Any

from shared.core.records import MonitoringReport

#: Drifted features named in a headline; the rest are counted.
NAMED = 5


def _features(drift: dict[str, Any], checked: int) -> str:
    drifted = list(drift.get("drifted_features") or [])
    text = f"{len(drifted)} of {checked} feature{'s' if checked != 1 else ''} drifted"
    if drifted:
        more = f" and {len(drifted) - NAMED} more" if len(drifted) > NAMED else ""
        text += ": " + ", ".join(drifted[:NAMED]) + more
    return f"{text}; dataset threshold {drift.get('threshold', 0):.0%}"


def headline(report: MonitoringReport) -> str:
    """``<verdict> — <what the window showed>`` for a report of ``shared.monitoring.monitor``."""
    verdict = report.get("verdict", "")
    if verdict == "insufficient_data":
        return f"insufficient data — {report.get('rows', 0):,} rows in the window, {report.get('min_rows', 0):,} needed"
    parts = []
    perf = report.get("performance") or {}
    if perf.get("degraded"):
        parts.append(f"{perf.get('metric')} {perf['value']:.4g} on {perf.get('rows', 0):,} labelled rows "
                     f"against {perf['reference']:.4g} at hold-out")
    checked = len(report.get("features") or {})
    if checked:
        parts.append(_features(report.get("dataset_drift") or {}, checked))
    else:
        parts.append(f"too few rows for drift ({report.get('rows', 0):,} of {report.get('min_rows', 0):,})")
    if (report.get("prediction_drift") or {}).get("drifted"):
        parts.append("predictions drifted")
    return f"{verdict.replace('_', ' ')} — " + "; ".join(parts)
