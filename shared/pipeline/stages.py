"""The training pipeline's stages: train, convert, register, promote, each only its work.

The plumbing around the work (the "already done?" look-up, recording the status, recording a
failure, sending the next message) is ``shared.pipeline.plumbing``'s, written once; whether a
candidate is promoted is the promotion policy's (``shared.policies.promotion``), judged on the
evidence ``shared.pipeline.evidence`` gathers. Each stage is idempotent: a redelivered message
or a re-triggered blob finds its earlier result and hands the same message on, so one run
yields one version and one promotion decision. Permanent failures (a bad dataset, a parity
mismatch) are recorded (the dataset quarantined) and *not* raised; transient ones raise so the
platform retries.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import pickle
import platform
import time
from pathlib import Path
from typing import Any, NoReturn, Unpack

import numpy as np
import pandas as pd

from shared.context import Context
from shared.core import faults
from shared.core.errors import (
    AlreadyExists,
    DatasetError,
    IntegrityError,
    InvalidName,
    MlopsError,
    ModelNotFound,
    PreconditionFailed,
    as_permanent,
    is_transient,
)
from shared.core.profile import build_profile
from shared.core.records import ConvertRecord, DatasetRecord, Decision, DecisionSet, Manifest, RunStatus, TrainRecord
from shared.core.spec import ModelSpec
from shared.pipeline import exam
from shared.pipeline.convert import check_parity, convert, input_schema
from shared.pipeline.data import ORIGIN_COLUMN, read_table, table_sha256, validate
from shared.pipeline.evidence import gather
from shared.pipeline.messages import RunMessage
from shared.pipeline.plumbing import AlreadyDone, Outcome, Refused, StageResult, run_once, stage
from shared.pipeline.train import SPLIT_METHOD, fit, split_columns
from shared.policies import promotion
from shared.policies.rollout import DIRECT, HELD, plan
from shared.registry import datasets
from shared.registry.datasets import DatasetRef
from shared.registry.jsonio import dumps
from shared.registry.quarantine import quarantine, supersede
from shared.registry.rollouts import RolloutStore
from shared.registry.store import PRODUCTION, Alias
from shared.serving.graph import opsets

__all__ = ["StageResult", "handle_convert", "handle_dataset", "handle_promote", "handle_register", "run_id_for",
           "run_stage"]

log = logging.getLogger("mlops.pipeline")

PIPELINE_PKL = "pipeline.pkl"
HOLDOUT = "holdout.parquet"
TRAIN_JSON = "train.json"
MODEL_ONNX = "model.onnx"
CONVERT_JSON = "convert.json"
PROFILE_JSON = "profile.json"
#: 3: the decision names how the input contract differs from production's (``contract_changes``).
DECISION_SCHEMA_VERSION = 3


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_id_for(model: str, file: str, etag: str) -> str:
    """Deterministic: the same blob at the same ETag always maps to the same run."""
    return hashlib.sha256(f"{model}/{file}@{etag}".encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    # here: the libraries that made the model; skl2onnx alone costs ~1 s, and only register needs it
    import onnx
    import onnxruntime
    import skl2onnx
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }


def code_version(commit: str = "") -> dict[str, str]:
    """Which code trained a version: a digest of the app's Python sources, and the commit when
    the deployment names it (``Settings.code_version``)."""
    out = {"sources_sha256": _sources_sha256()}
    if commit:
        out["commit"] = commit[:64]
    return out


@functools.lru_cache(maxsize=1)
def _sources_sha256() -> str:
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted([*root.glob("shared/**/*.py"), *root.glob("functions/*.py"), root / "function_app.py"]):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


# -- train -----------------------------------------------------------------------------------
def handle_dataset(ctx: Context, blob_name: str, data: bytes | None = None, etag: str | None = None) -> StageResult:
    """Validate, split, fit and evaluate a dropped dataset; hand the run to ``convert``.

    ``blob_name`` is relative to the ``datasets`` container: ``<model>/<file>``.
    """
    try:
        ref = DatasetRef.parse(blob_name)
        spec = ctx.specs.get(ref.model)
    except (InvalidName, ModelNotFound) as exc:  # misplaced, a bad name, or no such model
        return StageResult(False, None, quarantine(ctx.storage, blob_name, exc.message, code=exc.code))
    except MlopsError as exc:  # a broken spec file: refuse with the spec's own message
        return StageResult(False, None, quarantine(ctx.storage, blob_name, exc.message, code=exc.code,
                                                   details=exc.details))
    if data is None or etag is None:
        blob = datasets.read(ctx.storage, ref.name)
        data, etag = blob.data, blob.info.etag
    run_id = run_id_for(ref.model, ref.file, etag)
    training = _Training(ctx, spec, ref, data, etag, run_id)
    return run_once(ctx, "train", ref.model, run_id, work=training.run, earlier=training.earlier,
                    before_send="train:before_send")


class _Training:
    """The train stage's work on one dataset at one ETag (one run)."""

    def __init__(self, ctx: Context, spec: ModelSpec, ref: DatasetRef, data: bytes, etag: str, run_id: str) -> None:
        self.ctx, self.spec, self.ref, self.data, self.etag, self.run_id = ctx, spec, ref, data, etag, run_id
        self.model = ref.model
        self.sha256 = _sha(data)
        self.identity: DatasetRecord = {"name": ref.path, "etag": etag, "sha256": self.sha256, "bytes": len(data)}
        self.content_keys = [f"{self.sha256}-{spec.sha256[:16]}"]  # + the table's, once it is read

    def earlier(self) -> Outcome | None:
        """Triggered again for the same blob and ETag: hand on the same message."""
        status = self.ctx.runs.status(self.model, self.run_id)
        if not (status and "train" in status.get("stages", {})
                and self.ctx.runs.exists(self.model, self.run_id, PIPELINE_PKL)):
            return None
        record = self.ctx.runs.get_json(self.model, self.run_id, TRAIN_JSON)
        return Outcome("already trained; message re-sent", next_message=self._message(record["pipeline_sha256"]))

    def _message(self, pipeline_sha256: str) -> RunMessage:
        return RunMessage("trained", self.model, self.run_id, self.run_id, artifact_sha256=pipeline_sha256)

    def _duplicate(self, earlier: str, same: str, **status: Unpack[RunStatus]) -> Outcome:
        """The run as a duplicate of ``earlier``: same content, same spec, no new version."""
        detail = (f"duplicate of run {earlier}: {self.identity['name']} has {same} as the dataset that run trained "
                  "on, and the spec the same hash; no new version")
        log.info("%s run %s: %s", self.model, self.run_id, detail)
        return Outcome(detail, {**status, "state": "duplicate", "duplicate_of": earlier, "dataset": self.identity,
                                "reason": detail})

    def _refuse(self, exc: Exception) -> NoReturn:
        """Raise what a failure to read, validate or fit becomes: the dataset refused
        (quarantined), a failed training, or the transient error itself (retried)."""
        if isinstance(exc, DatasetError):
            where = quarantine(self.ctx.storage, self.ref.name, exc.message, code=exc.code,
                               details={**exc.details, "run_id": self.run_id})
            raise Refused("validate", exc, where) from exc
        if is_transient(exc):
            raise exc
        raise Refused("train", as_permanent(exc, "TRAINING_FAILED")) from exc

    def run(self) -> Outcome:
        ctx, spec, model, run_id = self.ctx, self.spec, self.model, self.run_id
        earlier = ctx.runs.content_owner(model, self.content_keys[0])
        if earlier is not None and earlier != run_id:
            return self._duplicate(earlier, "the same SHA-256")
        started = time.perf_counter()
        ctx.runs.update_status(model, run_id, state="training", dataset=self.identity,
                               spec={"source": spec.source, "sha256": spec.sha256}, started_at=time.time())
        try:
            frame = read_table(self.data, self.ref.file, max_bytes=ctx.settings.max_dataset_bytes)
            dataset = validate(frame, spec, self.ref.file, max_chars=ctx.settings.max_string_chars)
        except Exception as exc:
            self._refuse(exc)
        validate_s = time.perf_counter() - started
        # The same table with its columns in another order is the same training.
        self.content_keys.append(f"{table_sha256(frame, self.ref.file)}-{spec.sha256[:16]}")
        earlier = ctx.runs.content_owner(model, self.content_keys[1])
        if earlier is not None and earlier != run_id:
            return self._duplicate(earlier, "the same rows and columns (in another column order)")

        try:
            result = fit(dataset.frame, spec)
        except Exception as exc:
            self._refuse(exc)
        supersede(ctx.storage, self.ref.name, run_id)
        t0 = time.perf_counter()
        record, exam_s = self._save(frame, dataset, result)
        status: RunStatus = {
            "state": "trained",
            "metrics": result.metrics,
            "stages": {
                "validate": {"seconds": validate_s},
                "fit": {"seconds": result.fit_seconds},
                "train": {"seconds": time.perf_counter() - started, "save_seconds": time.perf_counter() - t0},
                "exam_update": {"seconds": exam_s},
            },
        }
        for key, same in zip(self.content_keys, ("the same SHA-256", "the same rows and columns")):
            owner = ctx.runs.claim_content(model, key, run_id)
            if owner != run_id:  # the same content was trained concurrently under another name
                return self._duplicate(owner, same, **status)
        log.info("trained %s run %s on %d rows: %s", model, run_id, dataset.rows, result.metrics)
        return Outcome(f"trained on {dataset.rows} rows", status, self._message(record["pipeline_sha256"]))

    def _save(self, frame: pd.DataFrame, dataset: Any, result: Any) -> tuple[TrainRecord, float]:
        """Write the run's artifacts (fit, hold-out, profile), update the exam, write the train
        record; return the record and the seconds the exam update took."""

        ctx, spec, model, run_id = self.ctx, self.spec, self.model, self.run_id
        pipeline_bytes = pickle.dumps(result.pipeline, protocol=pickle.HIGHEST_PROTOCOL)
        holdout_bytes = _parquet_bytes(result.holdout)
        ctx.runs.put(model, run_id, HOLDOUT, holdout_bytes)
        ctx.runs.put(model, run_id, PIPELINE_PKL, pipeline_bytes)
        predictions = result.pipeline.predict(result.holdout[list(spec.features)])
        profile_bytes = dumps(build_profile(dataset.frame, spec.numeric, spec.categorical, predictions,
                                            spec.is_classifier, seed=spec.seed, missing=dataset.missing))
        ctx.runs.put(model, run_id, PROFILE_JSON, profile_bytes)
        faults.point("train:after_artifacts")
        t_exam = time.perf_counter()
        # A retraining dataset (it carries the origin column) may hold forged labels: it never
        # shapes the exam; it is judged on the exam as it stands.
        exam_source = ORIGIN_COLUMN not in frame.columns
        exam_ref: dict[str, Any] | None
        if exam_source:
            exam_ref = exam.add_holdout(ctx.storage, spec, result.holdout, {
                "dataset": self.ref.path, "sha256": self.sha256, "run_id": run_id}).ref()
        else:
            current_exam = exam.latest(ctx.storage, model)
            exam_ref = current_exam.ref() if current_exam else None
        exam_s = time.perf_counter() - t_exam
        record: TrainRecord = {
            "model": model,
            "run_id": run_id,
            "dataset": {
                "uri": ctx.storage.uri(datasets.CONTAINER, self.ref.name),
                "name": self.ref.path,
                "etag": self.etag,
                "sha256": self.sha256,
                "rows": dataset.rows,
                "bytes": len(self.data),
                "validation": dataset.report(),
            },
            "split": {"train_rows": len(result.train), "holdout_rows": len(result.holdout), "method": SPLIT_METHOD,
                      "key": split_columns(spec), "holdout_fraction": spec.holdout_fraction},
            "exam": exam_ref,
            "exam_source": exam_source,
            "holdout_sha256": _sha(holdout_bytes),
            "pipeline_sha256": _sha(pipeline_bytes),
            "profile_sha256": _sha(profile_bytes),
            "metrics": result.metrics,
            "params": result.params,
            "estimator": spec.estimator,
            "spec": {"source": spec.source, "sha256": spec.sha256},
            "classes": [_plain(c) for c in result.pipeline.classes_] if spec.is_classifier else None,
        }
        ctx.runs.put_json(model, run_id, TRAIN_JSON, record)
        return record, exam_s


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _load_pipeline(ctx: Context, msg: RunMessage) -> Any:
    data = ctx.runs.get(msg.model, msg.run_id, PIPELINE_PKL)
    # The pickle lives where a user could write; the hash came through our own queue.
    if not msg.artifact_sha256 or _sha(data) != msg.artifact_sha256:
        raise IntegrityError(
            f"run (model={msg.model}, run_id={msg.run_id}): {PIPELINE_PKL} does not match the "
            "SHA-256 its message carries; refusing to unpickle it"
        )
    return pickle.loads(data)  # noqa: S301 - hash-checked above


def _load_holdout(ctx: Context, model: str, run_id: str, expected_sha: str) -> pd.DataFrame:
    data = ctx.runs.get(model, run_id, HOLDOUT)
    if _sha(data) != expected_sha:
        raise IntegrityError(f"run (model={model}, run_id={run_id}): {HOLDOUT} changed since training")
    return pd.read_parquet(io.BytesIO(data))


# -- convert ---------------------------------------------------------------------------------
def _converted_before(ctx: Context, msg: RunMessage) -> Outcome | None:
    if not ctx.runs.exists(msg.model, msg.run_id, CONVERT_JSON):
        return None
    record = ctx.runs.get_json(msg.model, msg.run_id, CONVERT_JSON)
    nxt = RunMessage("converted", msg.model, msg.run_id, msg.correlation_id, artifact_sha256=record["onnx_sha256"])
    return Outcome("already converted; message re-sent", next_message=nxt)


@stage("convert", earlier=_converted_before)
def handle_convert(ctx: Context, msg: RunMessage) -> Outcome:
    """Convert the fitted pipeline to ONNX and prove parity on the hold-out rows."""

    model, run_id = msg.model, msg.run_id
    spec = ctx.specs.get(model)
    train: TrainRecord = ctx.runs.get_json(model, run_id, TRAIN_JSON)
    pipeline = _load_pipeline(ctx, msg)
    holdout = _load_holdout(ctx, model, run_id, train["holdout_sha256"])
    t0 = time.perf_counter()
    onnx_bytes = convert(pipeline, spec)
    convert_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = check_parity(pipeline, onnx_bytes, holdout, spec)
    parity_s = time.perf_counter() - t0
    ctx.runs.put(model, run_id, MODEL_ONNX, onnx_bytes)
    faults.point("convert:after_onnx")
    record: ConvertRecord = {
        "onnx_sha256": _sha(onnx_bytes),
        "onnx_bytes": len(onnx_bytes),
        "opsets": opsets(onnx_bytes),
        "parity": report.to_dict(),
    }
    ctx.runs.put_json(model, run_id, CONVERT_JSON, record)
    nxt = RunMessage("converted", model, run_id, msg.correlation_id, artifact_sha256=record["onnx_sha256"])
    return Outcome(f"converted; parity max abs diff {report.max_abs_diff:.3g}",
                   {"state": "converted",
                    "stages": {"convert": {"seconds": convert_s}, "parity": {"seconds": parity_s}}},
                   nxt)


# -- register --------------------------------------------------------------------------------
@stage("register", before_send="register:after_manifest")
def handle_register(ctx: Context, msg: RunMessage) -> Outcome:
    """Write the run as the next immutable version, manifest last (allocation and commit are
    idempotent per run: a redelivery finds the same version)."""

    model, run_id = msg.model, msg.run_id
    t0 = time.perf_counter()
    spec = ctx.specs.get(model)
    train: TrainRecord = ctx.runs.get_json(model, run_id, TRAIN_JSON)
    conv: ConvertRecord = ctx.runs.get_json(model, run_id, CONVERT_JSON)
    onnx_bytes = ctx.runs.get(model, run_id, MODEL_ONNX)
    if _sha(onnx_bytes) != conv["onnx_sha256"] or conv["onnx_sha256"] != msg.artifact_sha256:
        raise IntegrityError(f"run (model={model}, run_id={run_id}): model.onnx changed since conversion")
    profile_bytes = ctx.runs.get(model, run_id, PROFILE_JSON)
    if _sha(profile_bytes) != train["profile_sha256"]:
        raise IntegrityError(f"run (model={model}, run_id={run_id}): profile.json changed since training")
    status = ctx.runs.status(model, run_id) or {}
    version = ctx.registry.allocate(model, run_id)
    manifest: Manifest = {
        "schema_version": 1,
        "run_id": run_id,
        "correlation_id": msg.correlation_id,
        "task": spec.task,
        "estimator": spec.estimator,
        "metrics": train["metrics"],
        "params": train["params"],
        "dataset": train["dataset"],
        "split": train["split"],
        "exam": train.get("exam"),
        "exam_source": train.get("exam_source"),
        "holdout": {"uri": f"runs/{model}/{run_id}/{HOLDOUT}", "sha256": train["holdout_sha256"]},
        "spec": train["spec"],
        "libraries": library_versions(),
        "code": code_version(ctx.settings.code_version),
        "onnx": {"file": MODEL_ONNX, "sha256": conv["onnx_sha256"], "bytes": conv["onnx_bytes"],
                 "opsets": conv["opsets"]},
        "profile": {"file": PROFILE_JSON, "sha256": train["profile_sha256"]},
        "input_schema": input_schema(spec, onnx_bytes),
        "target": spec.target,
        "classes": train["classes"],
        "parity": conv["parity"],
        "stage_seconds": {k: v["seconds"] for k, v in status.get("stages", {}).items()},
    }
    ctx.registry.commit(model, version, onnx_bytes, manifest, extra={PROFILE_JSON: profile_bytes})
    return Outcome(f"registered as version {version}",
                   {"state": "registered", "version": version,
                    "stages": {"register": {"seconds": time.perf_counter() - t0}}},
                   RunMessage("registered", model, run_id, msg.correlation_id, version=version))


# -- promote ---------------------------------------------------------------------------------
def _decided_before(ctx: Context, msg: RunMessage) -> Outcome | None:
    if msg.version is not None and ctx.registry.is_decided(msg.model, msg.version):
        return Outcome("already decided")
    return None


@stage("promote", earlier=_decided_before)
def handle_promote(ctx: Context, msg: RunMessage, *, max_attempts: int = 5) -> Outcome:
    """Score candidate and production on the candidate's hold-out and the exam; decide by the
    promotion policy; move the alias if the candidate wins; record the decision once."""

    model, run_id, version = msg.model, msg.run_id, msg.version
    if version is None:
        raise DatasetError("promote message has no version")
    t0 = time.perf_counter()
    spec = ctx.specs.get(model)
    manifest = ctx.registry.manifest(model, version)
    holdout = _load_holdout(ctx, model, run_id, manifest["holdout"]["sha256"])
    exam_ref = manifest.get("exam")
    exam_rows = exam.load(ctx.storage, model, exam_ref) if exam_ref else None
    candidate = promotion.Version(version, manifest["input_schema"], manifest.get("classes"))
    for _ in range(max_attempts):
        current = ctx.registry.alias(model, PRODUCTION)
        verdict = _judge(ctx, spec, model, candidate, manifest, holdout, exam_rows, current)
        promoted, reason, rollout = _rollout_instead(ctx, spec, model, version, run_id, current, verdict)
        if promoted and not (current is not None and current.version == version):
            hold = verdict.sets.get("holdout") or {}
            try:
                ctx.registry.move_alias(
                    model, PRODUCTION, version, expected=current, event="promote", reason=reason,
                    actor="pipeline",
                    details={"run_id": run_id, "candidate_metrics": hold.get("candidate"),
                             "champion_metrics": hold.get("production"),
                             "exam": exam_ref and {k: exam_ref[k] for k in ("version", "sha256")}},
                )
            except PreconditionFailed:
                continue  # production moved meanwhile: decide again against the new one
            faults.point("promote:after_alias")
        decision, state = _record_decision(ctx, spec, msg, manifest, verdict, current, promoted, reason, rollout)
        return Outcome(reason, {"state": state, "decision": decision,
                                "stages": {"promote": {"seconds": time.perf_counter() - t0}}})
    raise PreconditionFailed(f"production alias of {model} kept moving; giving up after {max_attempts} attempts")


def _judge(ctx: Context, spec: ModelSpec, model: str, candidate: promotion.Version, manifest: Manifest,
           holdout: pd.DataFrame, exam_rows: pd.DataFrame | None, current: Alias | None) -> promotion.Decision:
    """The promotion policy's verdict on ``candidate`` against production as it is now; when the
    candidate already is production (a redelivered message), against itself, with no evidence."""
    version = candidate.version
    if current is not None and current.version == version:
        return promotion.decide(promotion.Rule.of(spec), candidate, promotion.Version(version),
                                promotion.Evidence(()))
    champion = None
    if current is not None:
        prod = ctx.registry.manifest(model, current.version)
        champion = promotion.Version(current.version, prod["input_schema"], prod.get("classes"))
    evidence = gather(ctx, spec, model, version, manifest, holdout, exam_rows, current.version if current else None)
    return promotion.decide(promotion.Rule.of(spec), candidate, champion, evidence)


def _rollout_instead(ctx: Context, spec: ModelSpec, model: str, version: int, run_id: str, current: Alias | None,
                     verdict: promotion.Decision) -> tuple[bool, str, dict[str, Any] | None]:
    """``(promoted, reason, rollout)``: the verdict, unless rollouts are on and a candidate that
    won against another production version is to earn production on live traffic instead (then
    production stays, and ``rollout`` says how the rollout began, or why it is held)."""
    promoted, reason = verdict.promoted, verdict.reason
    if ctx.settings.rollouts and promoted and current is not None and current.version != version:
        rollout = _start_rollout(ctx, spec, model, version, current.version, run_id, reason)
        if rollout is not None:  # production stays; the candidate earns it on live traffic
            return False, f"{reason}; {rollout['reason']}", rollout
    return promoted, reason, None


def _record_decision(ctx: Context, spec: ModelSpec, msg: RunMessage, manifest: Manifest,
                     verdict: promotion.Decision, current: Alias | None, promoted: bool, reason: str,
                     rollout: dict[str, Any] | None) -> tuple[Decision, str]:
    """Record the decision once (``AlreadyDone`` if it was recorded already) and audit a rejection;
    the decision, and the run's state: promoted, rollout or rejected."""
    assert msg.version is not None  # handle_promote refuses a message without one
    decision = _decision_record(spec, msg, manifest, verdict, current.version if current else None)
    if rollout is not None:
        decision["promoted"], decision["reason"], decision["rollout"] = False, reason, rollout
    started = bool(rollout and rollout["started"])
    try:
        ctx.registry.record_decision(msg.model, msg.version, decision)
    except AlreadyExists:
        raise AlreadyDone("already decided") from None
    if not promoted and not started:
        ctx.registry.audit(msg.model, "reject", decision)
    log.info("%s v%s %s: %s", msg.model, msg.version, "promoted" if promoted else "not promoted", reason)
    return decision, "promoted" if promoted else "rollout" if started else "rejected"


def _decision_record(spec: ModelSpec, msg: RunMessage, manifest: Manifest, verdict: promotion.Decision,
                     champion: int | None) -> Decision:
    """The decision as the registry keeps it: the verdict, both versions' scores, the exam."""
    assert msg.version is not None  # handle_promote refuses a message without one
    hold = verdict.sets.get("holdout")
    exam_ref = manifest.get("exam")
    exam_set: DecisionSet | None = None
    if exam_ref:
        exam_set = {**(verdict.sets.get("exam") or {}), "version": exam_ref["version"], "sha256": exam_ref["sha256"],
                    "exam_rows": exam_ref["rows"]}
    return {
        "schema_version": DECISION_SCHEMA_VERSION,
        "model": msg.model,
        "version": msg.version,
        "run_id": msg.run_id,
        "promoted": verdict.promoted,
        "reason": verdict.reason,
        "metric": spec.metric,
        "candidate_metrics": (hold or {}).get("candidate"),
        "champion_version": champion,
        "champion_metrics": (hold or {}).get("production"),
        "holdout": hold,
        "exam": exam_set,
        "unseen_fraction": verdict.unseen_fraction,
        "contract_changes": list(verdict.contract_changes),
        "dataset": manifest["dataset"]["name"],
        "exam_source": manifest.get("exam_source"),
        "decided_at": time.time(),
    }


def _start_rollout(ctx: Context, spec: ModelSpec, model: str, version: int, champion: int, run_id: str,
                   offline: str) -> dict[str, Any] | None:
    """Start the rollout of a candidate that passed the offline gate against production; None
    when the spec's rollout mode is ``direct`` (promote at once, as before)."""

    mode, reason = plan(spec.rollout, ctx.registry.manifest(model, champion)["input_schema"],
                        ctx.registry.manifest(model, version)["input_schema"], candidate=version, champion=champion,
                        offline=offline)
    if mode == DIRECT:
        return None
    if mode == HELD:
        return {"started": False, "mode": mode, "reason": reason}
    result = RolloutStore(ctx.storage).start(model, version, champion, mode=mode, steps=spec.rollout.steps,
                                             reason=reason, actor="pipeline", run_id=run_id)
    if result.superseded is not None and result.superseded.run_id:
        ctx.runs.update_status(model, result.superseded.run_id, state="rejected",
                               rollout={"status": result.superseded.status, "reason": result.superseded.reason})
    return {"started": result.started, "mode": mode, "reason": result.reason,
            "state": f"registry/{model}/rollout.json" if result.started else None}


_QUEUE_STAGES = {"convert": handle_convert, "register": handle_register, "promote": handle_promote}


def run_stage(ctx: Context, stage: str, msg: RunMessage) -> StageResult:
    """Run one queue-triggered stage: each records its own permanent failures (``plumbing``);
    only transient ones raise."""
    return _QUEUE_STAGES[stage](ctx, msg)
