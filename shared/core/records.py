"""The shapes of the records the system keeps, each with a ``schema_version``.

Each record has one owner that writes and reads it (named below); everything else reads
through that owner. The shapes are ``TypedDict``s: the records are JSON on the wire and in
storage, and a type checker holds both sides of every access to these keys. Readers accept
older documents (a missing ``schema_version`` is version 0) and fill what they lack.
"""
from __future__ import annotations

from typing import Any, TypedDict


class DatasetRecord(TypedDict, total=False):
    """A dataset as lineage names it (``shared.registry.datasets.DatasetRef`` is the parsed name)."""

    name: str  # datasets/<model>/<file>
    etag: str
    sha256: str
    bytes: int
    rows: int
    uri: str
    validation: dict[str, Any]  # the validation report (train record and manifest)


class StageError(TypedDict, total=False):
    """Why a run failed: the stage, the error code and its message (plus the error's details)."""

    stage: str  # validate | train | convert | register | promote
    code: str
    message: str
    parity: dict[str, Any]  # a parity refusal's figures (and any other detail of the error)


class RunStatus(TypedDict, total=False):
    """``runs/<model>/<run_id>/status.json``, owned by ``shared.registry.runs.RunStore``."""

    schema_version: int
    model: str
    run_id: str
    # training | trained | converted | registered | rollout | promoted | rejected | failed
    # | quarantined | duplicate
    state: str
    dataset: DatasetRecord
    spec: dict[str, str]  # source, sha256
    created_at: float
    started_at: float
    updated_at: float
    stages: dict[str, dict[str, float]]  # stage -> {"seconds": ...}
    metrics: dict[str, float]
    version: int
    decision: Decision
    rollout: dict[str, Any]  # status, reason, candidate: what became of the version's rollout
    error: StageError
    quarantine: str  # the quarantine record's path
    duplicate_of: str
    reason: str


class SchemaField(TypedDict, total=False):
    """One input of a version's contract: the user's column, its type, the graph's input."""

    name: str
    type: str  # double | string | ...
    input: str


class DecisionSet(TypedDict, total=False):
    """Both versions' metrics on one set of rows neither trained on, and the verdict on it."""

    rows: int
    rows_total: int
    candidate: dict[str, float] | None
    production: dict[str, float] | None
    passed: bool | None  # None: the set could not be scored
    reason: str
    sources: int  # the exam: how many datasets its rows came from
    # the exam's identity (on the exam set of a decision record)
    version: int
    sha256: str
    exam_rows: int


class Decision(TypedDict, total=False):
    """``registry/<model>/decisions/<version>.json``, owned by ``shared.registry.store.Registry``;
    written by the promote stage from ``shared.policies.promotion.Decision``."""

    schema_version: int  # 2: per-set results, the exam and the unseen fraction; 3: contract changes
    model: str
    version: int
    run_id: str
    promoted: bool
    reason: str
    metric: str
    candidate_metrics: dict[str, float] | None
    champion_version: int | None
    champion_metrics: dict[str, float] | None
    holdout: DecisionSet | None
    exam: DecisionSet | None  # the same on the exam, with its version and SHA-256
    unseen_fraction: float | None
    contract_changes: list[str]  # how the input contract differs from production's
    dataset: str  # datasets/<model>/<file>
    exam_source: bool | None
    decided_at: float
    #: Set when the candidate passed against production and a rollout was started (or held)
    #: instead of promoting it: started, mode, reason, state (``registry/<model>/rollout.json``).
    rollout: dict[str, Any] | None


class TrainRecord(TypedDict, total=False):
    """``runs/<model>/<run_id>/train.json``, written by the train stage, read by convert and register."""

    model: str
    run_id: str
    dataset: DatasetRecord
    split: dict[str, Any]  # train_rows, holdout_rows, method, key, holdout_fraction
    exam: dict[str, Any] | None  # the exam's reference: version, sha256, rows
    exam_source: bool
    holdout_sha256: str
    pipeline_sha256: str
    profile_sha256: str
    metrics: dict[str, float]
    params: dict[str, Any]
    estimator: str
    spec: dict[str, str]
    classes: list[Any] | None


class ConvertRecord(TypedDict, total=False):
    """``runs/<model>/<run_id>/convert.json``, written by the convert stage, read by register."""

    onnx_sha256: str
    onnx_bytes: int
    opsets: dict[str, int]
    parity: dict[str, Any]


class Manifest(TypedDict, total=False):
    """``registry/<model>/versions/<n>/manifest.json``, owned by ``shared.registry.store.Registry``;
    its presence commits the version."""

    schema_version: int
    model: str
    run_id: str
    correlation_id: str
    version: int
    committed_at: float
    task: str
    estimator: str
    metrics: dict[str, float]
    params: dict[str, Any]
    dataset: DatasetRecord
    split: dict[str, Any]
    holdout: dict[str, str]
    exam: dict[str, Any] | None
    spec: dict[str, str]
    libraries: dict[str, str]
    code: dict[str, str]
    onnx: dict[str, Any]  # file, sha256, bytes, opsets
    profile: dict[str, str]
    input_schema: list[SchemaField]
    target: str
    classes: list[Any] | None
    parity: dict[str, Any]
    stage_seconds: dict[str, float]
    exam_source: bool | None


class AuditEntry(TypedDict, total=False):
    """``registry/<model>/audit/<time>-<id>-<event>.json``, owned by ``shared.registry.store.Registry``.

    An alias move's entry holds the alias record's fields and the move's details; a rejection's
    holds the decision (``Decision``'s fields)."""

    schema_version: int
    event: str  # promote | reject | rollback | set_alias
    at: float
    alias: str
    version: int
    actor: str
    reason: str
    pending: bool  # shown from the alias record: the entry's own write has not succeeded yet


class QuarantineRecord(TypedDict, total=False):
    """``quarantine/<model>/<file>.json``, owned by ``shared.registry.quarantine``."""

    schema_version: int
    dataset: str  # datasets/<model>/<file>
    reason: str
    code: str
    details: dict[str, Any]
    quarantined_at: float
    superseded_by: dict[str, Any]  # run_id, at: a later valid write of the same blob
    record: str  # added when listed: the record's own path, quarantine/<model>/<file>.json


class MonitoringReport(TypedDict, total=False):
    """``monitoring/<model>/<window end>-<id>/report.json``, owned by ``shared.monitoring.monitor``."""

    schema_version: int
    model: str
    version: int | None
    generated_at: float
    generated_at_iso: str
    window: dict[str, Any]  # from, to, and their ISO forms
    rows: int
    min_rows: int
    verdict: str  # drift | no_drift | insufficient_data | ...
    thresholds: dict[str, Any]
    dataset_drift: dict[str, Any]  # drifted, share, threshold, drifted_features
    features: dict[str, Any]  # per feature: its drift test and verdict
    prediction_drift: dict[str, Any]
    performance: dict[str, Any]
    breach: bool
    consecutive_breaches: int
    retraining: dict[str, Any]  # requested, reason
    headline: str  # the verdict in words, naming drifted features whatever the verdict
    late_rows: int  # rows of log parts written after an earlier run's window, judged now
    last_conclusive: dict[str, Any] | None  # added when served: the last report that judged drift
    history: list[dict[str, Any]]  # the model's last reports, newest last: each one's entry
    latest: dict[str, Any]  # only in a superseded run's answer (never stored): the run that covers it
