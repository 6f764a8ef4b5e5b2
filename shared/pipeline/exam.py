"""The promotion exam: per model, the hold-out rows of recent datasets that people dropped.

A candidate is judged on its own hold-out *and* on the exam, and so is production: the exam
is what a retraining dataset (whose hold-out may be made of forged feedback) cannot shape.

Layout in the ``exams`` container (this module is its only owner)::

    <model>/<n>-<sha>.parquet  the exam rows of version n: features, target, row key, source seq
                               (named by content: two writers racing for n never overwrite)
    <model>/<n>.json           written last and create-only: commits version n (file, hash, sources)

Rules:

- only datasets without an origin column (``shared.pipeline.data.ORIGIN_COLUMN``, which retraining
  writes) add rows, and only their hold-out rows: labelled live rows never enter;
- rows are deduplicated (the newest copy wins) and kept for the spec's ``[exam]
  recent_datasets`` most recent sources, newest first, at most ``max_rows``;
- versions are immutable; each decision records the version and SHA-256 it used.
"""
from __future__ import annotations

import hashlib
import io
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shared.core import names
from shared.core.errors import AlreadyExists, IntegrityError
from shared.core.spec import ModelSpec
from shared.pipeline.train import ROW_KEY, in_holdout
from shared.ports.storage import Storage
from shared.registry.jsonio import get_json, put_json

CONTAINER = "exams"
SEQ = "_source_seq"
_VERSION = re.compile(r"^[^/]+/(\d{8})\.json$")


@dataclass(frozen=True)
class ExamVersion:
    """A committed exam version: its record and where its rows are."""

    model: str
    version: int
    sha256: str
    rows: int
    record: dict[str, Any]

    def ref(self) -> dict[str, Any]:
        """What a run or a decision records about the exam it used."""
        return {"version": self.version, "sha256": self.sha256, "rows": self.rows,
                "sources": [s["dataset"] for s in self.record.get("sources", [])]}


def _name(model: str, version: int, ext: str) -> str:
    return f"{names.model_name(model)}/{version:08d}.{ext}"


def _rows_name(model: str, version: int, sha256: str) -> str:
    return f"{names.model_name(model)}/{version:08d}-{sha256[:16]}.parquet"


def latest(storage: Storage, model: str) -> ExamVersion | None:
    """The newest committed exam version of ``model``, or None before the first dataset."""
    found = [int(m.group(1)) for b in storage.list(CONTAINER, f"{names.model_name(model)}/")
             if (m := _VERSION.match(b.name))]
    return get(storage, model, max(found)) if found else None


def get(storage: Storage, model: str, version: int) -> ExamVersion:
    found = get_json(storage, CONTAINER, _name(model, version, "json"))
    if found is None:
        raise IntegrityError(f"exam (model={model}, version={version}) does not exist")
    rec = found[0]
    return ExamVersion(model, version, rec["sha256"], rec["rows"], rec)


def load(storage: Storage, model: str, ref: dict[str, Any]) -> pd.DataFrame:
    """The rows of the exam version ``ref`` names, refused unless they match its SHA-256."""
    blob = storage.get(CONTAINER, _rows_name(model, int(ref["version"]), ref["sha256"]))
    if hashlib.sha256(blob.data).hexdigest() != ref["sha256"]:
        raise IntegrityError(f"exam (model={model}, version={ref['version']}) does not match its recorded SHA-256")
    return pd.read_parquet(io.BytesIO(blob.data))


def _columns(spec: ModelSpec) -> list[str]:
    return [*spec.features, spec.target, ROW_KEY]


def add_holdout(storage: Storage, spec: ModelSpec, holdout: pd.DataFrame, source: dict[str, Any],
                *, max_attempts: int = 10) -> ExamVersion:
    """Add a dropped dataset's hold-out rows as the exam's newest source; a new version.

    ``source`` names the dataset (``dataset``, ``sha256``, ``run_id``). Idempotent: a source
    whose SHA-256 is already in the latest version adds nothing. Two concurrent additions
    both land: the loser of the create-only commit merges again on top of the winner.
    """
    model = spec.name
    cols = _columns(spec)
    for _ in range(max_attempts):
        current = latest(storage, model)
        sources: list[dict[str, Any]] = list(current.record["sources"]) if current else []
        if current is not None and any(s["sha256"] == source["sha256"] for s in sources):
            return current
        rows = load(storage, model, current.record) if current else pd.DataFrame(columns=[*cols, SEQ])
        reset = None
        if current and current.record.get("columns") != cols:
            rows, sources, reset = rows.iloc[0:0], [], "the spec's columns changed: older rows dropped"
        seq = max((s["seq"] for s in sources), default=0) + 1
        fresh = holdout[cols].assign(**{SEQ: seq})
        merged = pd.concat([fresh, rows[[*cols, SEQ]]], ignore_index=True) if len(rows) else fresh
        # The same row from two datasets counts once, as its newest copy.
        merged = merged.drop_duplicates(subset=[*spec.features, spec.target], keep="first")
        keep = sorted({seq, *(s["seq"] for s in sources)}, reverse=True)[: spec.exam.recent_datasets]
        merged = merged[merged[SEQ].isin(keep)].head(spec.exam.max_rows).reset_index(drop=True)
        kept_sources = [s for s in [{**source, "seq": seq, "holdout_rows": len(fresh)}, *sources] if s["seq"] in keep]
        buf = io.BytesIO()
        merged.to_parquet(buf, index=False)
        data = buf.getvalue()
        version = (current.version if current else 0) + 1
        digest = hashlib.sha256(data).hexdigest()
        storage.put(CONTAINER, _rows_name(model, version, digest), data)
        record: dict[str, Any] = {
            "schema_version": 1,
            "model": model,
            "version": version,
            "sha256": digest,
            "file": _rows_name(model, version, digest),
            "rows": int(len(merged)),
            "columns": cols,
            "rows_per_source": {str(k): int(v) for k, v in merged[SEQ].value_counts().items()},
            "sources": kept_sources,
            "recent_datasets": spec.exam.recent_datasets,
            "max_rows": spec.exam.max_rows,
            "reset": reset,
            "created_at": time.time(),
        }
        try:
            put_json(storage, CONTAINER, _name(model, version, "json"), record, create_only=True)
        except AlreadyExists:
            continue  # another dataset committed this version first: merge on top of it
        return ExamVersion(model, version, record["sha256"], record["rows"], record)
    raise AlreadyExists(f"exam of {model}: {max_attempts} concurrent additions in a row; retry")


def unseen(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """The rows of ``frame`` that a content-hash split with hold-out ``fraction`` holds out.

    Pass the smaller of the two models' fractions: what remains is held out for both, so
    neither trained on it.
    """
    if ROW_KEY not in frame.columns:
        return frame.iloc[0:0]
    return frame[in_holdout(frame[ROW_KEY].to_numpy(dtype=np.uint64), fraction)].reset_index(drop=True)
