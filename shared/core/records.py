"""The shapes of the records the system keeps, each with a ``schema_version``.

Each record has one owner that writes and reads it (named below); everything else reads
through that owner. The shapes are ``TypedDict``s: the records are JSON on the wire and in
storage, and a type checker holds both sides of every access to these keys. Readers accept
older documents (a missing ``schema_version`` is version 0) and fill what they lack.
"""
from __future__ import annotations

from typing import Any, TypedDict


class DatasetRef(TypedDict, total=False):
    """A dataset as lineage names it."""

    name: str  # datasets/<model>/<file>
    etag: str
    sha256: str
    bytes: int
    rows: int
    uri: str


class StageError(TypedDict, total=False):
    """Why a run failed: the stage, the error code and its message (plus the error's details)."""

    stage: str  # validate | train | convert | register | promote
    code: str
    message: str


class RunStatus(TypedDict, total=False):
    """``runs/<model>/<run_id>/status.json``, owned by ``shared.registry.runs.RunStore``."""

    schema_version: int
    model: str
    run_id: str
    state: str  # training | trained | converted | registered | promoted | rejected | failed | quarantined | duplicate
    dataset: DatasetRef
    spec: dict[str, str]  # source, sha256
    created_at: float
    started_at: float
    updated_at: float
    stages: dict[str, dict[str, float]]  # stage -> {"seconds": ...}
    metrics: dict[str, float]
    version: int
    decision: Decision
    error: StageError
    quarantine: str  # the quarantine record's path
    duplicate_of: str
    reason: str


class Decision(TypedDict, total=False):
    """``registry/<model>/decisions/<version>.json``, owned by ``shared.registry.store.Registry``."""

    schema_version: int
    model: str
    version: int
    run_id: str
    promoted: bool
    reason: str
    metric: str
    candidate_metrics: dict[str, float] | None
    champion_version: int | None
    champion_metrics: dict[str, float] | None
    holdout: dict[str, Any] | None  # rows, candidate, production, passed, reason
    exam: dict[str, Any] | None  # the same on the exam, with its version and SHA-256
    decided_at: float


class Manifest(TypedDict, total=False):
    """``registry/<model>/versions/<n>/manifest.json``, owned by ``shared.registry.store.Registry``;
    its presence commits the version."""

    schema_version: int
    run_id: str
    version: int
    committed_at: float
    task: str
    estimator: str
    metrics: dict[str, float]
    params: dict[str, Any]
    dataset: DatasetRef
    split: dict[str, Any]
    holdout: dict[str, str]
    exam: dict[str, Any] | None
    spec: dict[str, str]
    libraries: dict[str, str]
    code: dict[str, str]
    onnx: dict[str, Any]  # file, sha256, bytes, opsets
    profile: dict[str, str]
    input_schema: list[dict[str, str]]  # name (the user's column), type, input (the graph's)
    target: str
    classes: list[Any] | None
    parity: dict[str, Any]
    stage_seconds: dict[str, float]


class AuditEntry(TypedDict, total=False):
    """``registry/<model>/audit/<time>-<id>-<event>.json``, owned by ``shared.registry.store.Registry``."""

    schema_version: int
    event: str  # promote | reject | rollback | set_alias
    at: float
    alias: str
    version: int
    actor: str
    reason: str


class QuarantineRecord(TypedDict, total=False):
    """``quarantine/<model>/<file>.json``, owned by ``shared.registry.quarantine``."""

    schema_version: int
    dataset: str  # datasets/<model>/<file>
    reason: str
    code: str
    details: dict[str, Any]
    quarantined_at: float
    superseded_by: dict[str, Any]  # run_id, at: a later valid write of the same blob
