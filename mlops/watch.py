"""Following a run stage by stage over the runs API, until it is served or has ended otherwise.

A run's status document moves ``training`` -> ``trained`` -> ``converted`` -> ``registered`` ->
``promoted`` | ``rejected`` | ``rollout`` (its version earns production on live traffic; the
rollout ends ``promoted``, ``rolled_back``, ``superseded`` or ``aborted``), or ends ``failed``
(naming its stage), ``quarantined`` (refused at validation) or ``duplicate``. Here that becomes
six stages, ``validate``, ``train``, ``convert``, ``register``, ``promote`` and ``serve`` (the
deployment answers with the new version), each ``waiting``, ``running``, ``done``, ``failed`` or
``skipped``, with its seconds where recorded.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlops.client import ApiError, MlopsClient, RunSummary

STAGES = ("validate", "train", "convert", "register", "promote", "serve")
#: The stage each state has finished; the next one is running.
_DONE_THROUGH = {"training": 0, "trained": 2, "converted": 3, "registered": 4, "promoted": 5, "rejected": 5,
                 "rollout": 5}
#: A rollout that ended without promoting: the run's answer is no, as a rejection's.
_ROLLOUT_ENDS = ("rolled_back", "superseded", "aborted")
#: Where the recorded timings of each stage are kept in the run's ``timings``.
_TIMING = {"validate": "validate", "train": "fit", "convert": "convert", "register": "register", "promote": "promote"}


@dataclass
class Progress:
    """Where a run stands: per stage its state and seconds, and, once over, its end."""

    model: str
    run_id: str | None = None
    dataset: str | None = None
    stages: dict[str, str] = field(default_factory=lambda: dict.fromkeys(STAGES, "waiting"))
    seconds: dict[str, float] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)
    #: promoted | rejected | failed | quarantined | duplicate | served | rollout | rolled_back | superseded | aborted
    outcome: str | None = None
    version: int | None = None
    reason: str | None = None
    finished: bool = False

    @property
    def served(self) -> bool:
        return self.outcome == "served"


def progress_of(model: str, run: RunSummary) -> Progress:
    """The stages of ``run`` as its status document tells them."""
    p = Progress(model, run.get("run_id"), (run.get("dataset") or {}).get("name"))
    timings = run.get("timings") or {}
    for stage, key in _TIMING.items():
        if timings.get(key) is not None:
            p.seconds[stage] = float(timings[key])
    outcome, state = run.get("outcome"), run.get("state") or ""
    p.version = run.get("version")
    if outcome in ("failed", "quarantined"):
        return _failed(p, run, outcome)
    if outcome == "duplicate":
        p.stages = dict.fromkeys(STAGES, "skipped")
        p.outcome, p.reason, p.finished = outcome, run.get("explanation"), True
        return p
    through = _DONE_THROUGH.get(state, 0)
    for j, stage in enumerate(STAGES):
        p.stages[stage] = "done" if j < through else "running" if j == through else "waiting"
    if state == "trained":
        p.stages["validate"] = "done"
    if run.get("metrics"):
        p.detail["train"] = ", ".join(f"{k} {v:.4g}" for k, v in list(run["metrics"].items())[:3]
                                      if isinstance(v, (int, float)))
    if p.version is not None:
        p.detail["register"] = f"version {p.version}"
    _decided(p, model, run, outcome)
    return p


def _failed(p: Progress, run: RunSummary, outcome: str) -> Progress:
    """``p`` for a run that failed at a stage (or was quarantined at validation): the stages
    before it done, it failed with the error, the rest skipped."""
    error = run.get("error") or {}
    failed_at = "validate" if outcome == "quarantined" else error.get("stage", "train")
    if failed_at not in STAGES:
        failed_at = "train"
    i = STAGES.index(failed_at)
    for j, stage in enumerate(STAGES):
        p.stages[stage] = "done" if j < i else "failed" if j == i else "skipped"
    p.detail[failed_at] = f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
    p.outcome, p.reason, p.finished = outcome, run.get("explanation") or error.get("message"), True
    return p


def _decided(p: Progress, model: str, run: RunSummary, outcome: str | None) -> None:
    """The promote and serve stages of ``p`` once the promotion decided (or a rollout ended);
    nothing while it has not."""
    decision = run.get("decision") or {}
    if outcome == "rollout":
        # Passed the offline gate; production is unchanged while the candidate earns it on live
        # traffic (hours, by the spec's steps): the run is done, the rollout goes on.
        p.stages["promote"], p.stages["serve"] = "done", "skipped"
        p.detail["promote"] = str((run.get("rollout") or {}).get("summary") or "in rollout")
        p.detail["serve"] = f"in rollout: mlops rollout {model} follows it"
        p.outcome, p.reason, p.finished = outcome, run.get("explanation"), True
    elif outcome in _ROLLOUT_ENDS:
        p.stages["promote"], p.stages["serve"] = "failed", "skipped"
        p.detail["promote"] = str((run.get("rollout") or {}).get("reason") or outcome)
        p.outcome, p.reason, p.finished = outcome, run.get("explanation"), True
    elif outcome == "rejected":
        p.stages["promote"], p.stages["serve"] = "failed", "skipped"
        p.detail["promote"] = str(decision.get("reason") or "")
        p.outcome, p.reason, p.finished = outcome, run.get("explanation"), True
    elif outcome == "promoted":
        p.detail["promote"] = str(decision.get("reason") or "promoted")
        p.outcome = "promoted"


def find_run(client: MlopsClient, model: str, *, dataset: str | None, etag: str | None,
             since: float | None) -> RunSummary | None:
    """The run of a dropped dataset (its blob name and ETag), or the newest run when none is named."""
    runs = client.runs(model, limit=50)
    if dataset is None:
        return runs[0] if runs else None
    for r in runs:
        d = r.get("dataset") or {}
        if d.get("name") != dataset:
            continue
        if etag is not None and d.get("etag") not in (None, etag):
            continue
        if d.get("etag") is None and since is not None and (r.get("created_at") or 0) < since - 5:
            continue  # an older refusal of the same file name, without an ETag to tell them apart
        return r
    return None


def follow(client: MlopsClient, model: str, *, run_id: str | None = None, dataset: str | None = None,
           etag: str | None = None, since: float | None = None, timeout: float = 900.0, interval: float = 0.5,
           on_update: Callable[[Progress], None] = lambda p: None) -> Progress:
    """Poll until the run is served (its version answers) or has ended otherwise, calling
    ``on_update`` with each new state. Raises ``ApiError`` (code ``TIMEOUT``) past ``timeout``."""
    deadline = time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    progress = Progress(model, run_id, dataset)
    while True:
        run: RunSummary | None
        if run_id is None:
            run = find_run(client, model, dataset=dataset, etag=etag, since=since)
            if run is not None and run.get("run_id"):
                run_id = run["run_id"]
        if run_id is not None:
            run = client.run(model, run_id)
        if run is not None:
            progress = progress_of(model, run)
            if progress.outcome == "promoted" and progress.version is not None:
                try:
                    serving = client.served_version(model)
                except ApiError as exc:
                    if exc.status not in (503, 404):
                        raise
                    serving = None
                if serving == progress.version:
                    progress.stages["serve"] = "done"
                    progress.detail["serve"] = f"version {serving} answers"
                    progress.outcome, progress.finished = "served", True
                else:
                    progress.detail["serve"] = f"waiting for the workers to load version {progress.version}"
        key = (tuple(progress.stages.items()), progress.outcome, tuple(progress.detail.items()), progress.run_id)
        if key != last:
            on_update(progress)
            last = key
        if progress.finished:
            return progress
        if time.monotonic() > deadline:
            where = f"run {progress.run_id}" if progress.run_id else f"a run of {dataset or model}"
            raise ApiError(0, "TIMEOUT", f"{where} did not finish within {timeout:g} s; last state: "
                                         + ", ".join(f"{k} {v}" for k, v in progress.stages.items()))
        time.sleep(interval)
