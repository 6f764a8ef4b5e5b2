"""MkDocs hook: the estimators and metrics a spec may name, from the allow-lists in the code.

``<!-- estimators -->`` in a page becomes a table of ``shared.core.spec.ESTIMATORS`` and
``METRICS``, so the page can never offer an estimator the parser refuses.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- estimators -->"


def render() -> str:
    """The allow-lists as two Markdown tables."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from shared.core.spec import ESTIMATORS, METRICS

    out = ["| `[estimator] class` | scikit-learn module | tasks "
           "| scales numeric inputs unless `scale_numeric` says otherwise |", "|---|---|---|---|"]
    out += [f"| `{name}` | `{module}` | {', '.join(tasks)} | {'yes' if scaled else 'no'} |"
            for name, (module, tasks, scaled) in ESTIMATORS.items()]
    out += ["", "| `[promotion] metric` | tasks | better |", "|---|---|---|"]
    out += [f"| `{name}` | {', '.join(tasks)} | {'higher' if higher else 'lower'} |"
            for name, (tasks, higher) in METRICS.items()]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the tables."""
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
