"""The training pipeline's stages: train, convert, register, promote.

Each stage takes a typed input, does its work, records it in the run's status and sends
the next typed message. Each is idempotent: a redelivered message or a re-triggered blob
finds its earlier result and hands the same message on, so one run yields one version and
one promotion decision. Permanent failures (a bad dataset, a parity mismatch) are recorded
(the dataset quarantined) and *not* raised; transient ones raise so the platform retries.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import pickle
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.context import Context
from shared.core import faults, names
from shared.core.errors import (
    AlreadyExists,
    DatasetError,
    IntegrityError,
    InvalidName,
    MlopsError,
    ModelNotFound,
    NotFound,
    PreconditionFailed,
    as_permanent,
    is_transient,
)
from shared.core.spec import ModelSpec
from shared.pipeline.data import ORIGIN_COLUMN, read_table, validate
from shared.pipeline.messages import RunMessage
from shared.registry import datasets
from shared.registry.quarantine import quarantine, supersede
from shared.registry.store import PRODUCTION

log = logging.getLogger("mlops.pipeline")

PIPELINE_PKL = "pipeline.pkl"
HOLDOUT = "holdout.parquet"
TRAIN_JSON = "train.json"
MODEL_ONNX = "model.onnx"
CONVERT_JSON = "convert.json"
PROFILE_JSON = "profile.json"


@dataclass(frozen=True)
class StageResult:
    """What a stage did: ``ok`` false means a recorded, permanent refusal."""

    ok: bool
    run_id: str | None
    detail: str
    next_message: RunMessage | None = None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_id_for(model: str, file: str, etag: str) -> str:
    """Deterministic: the same blob at the same ETag always maps to the same run."""
    return hashlib.sha256(f"{model}/{file}@{etag}".encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
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
    parts = datasets.parts(blob_name)
    if len(parts) != 2:
        where = quarantine(
            ctx.storage,
            blob_name,
            f"datasets must be dropped as datasets/<model>/<file>; {blob_name!r} is not",
            code="INVALID_PATH",
        )
        return StageResult(False, None, where)
    model, file = parts
    try:
        names.model_name(model)
        names.file_name(file)
        spec = ctx.specs.get(model)
    except (InvalidName, ModelNotFound) as exc:
        where = quarantine(ctx.storage, blob_name, exc.message, code=exc.code)
        return StageResult(False, None, where)
    except MlopsError as exc:  # a broken spec file: refuse with the spec's own message
        where = quarantine(ctx.storage, blob_name, exc.message, code=exc.code, details=exc.details)
        return StageResult(False, None, where)

    if data is None or etag is None:
        blob = datasets.read(ctx.storage, blob_name)
        data, etag = blob.data, blob.info.etag
    run_id = run_id_for(model, file, etag)
    status = ctx.runs.status(model, run_id)
    if status and "train" in status.get("stages", {}) and ctx.runs.exists(model, run_id, PIPELINE_PKL):
        # Triggered again for the same blob and ETag: hand on the same message.
        record = ctx.runs.get_json(model, run_id, TRAIN_JSON)
        msg = RunMessage("trained", model, run_id, run_id, artifact_sha256=record["pipeline_sha256"])
        ctx.bus.send(ctx.settings.queue_convert, msg.to_outgoing())
        return StageResult(True, run_id, "already trained; message re-sent", msg)
    identity = {"name": datasets.path(blob_name), "etag": etag, "sha256": _sha(data), "bytes": len(data)}
    content_key = f"{identity['sha256']}-{spec.sha256[:16]}"
    earlier = ctx.runs.content_owner(model, content_key)
    if earlier is not None and earlier != run_id:
        return _duplicate(ctx, model, run_id, identity, earlier)

    started = time.perf_counter()
    ctx.runs.update_status(
        model, run_id, state="training", dataset=identity, spec={"source": spec.source, "sha256": spec.sha256},
        started_at=time.time(),
    )
    try:
        t0 = time.perf_counter()
        frame = read_table(data, file, max_bytes=ctx.settings.max_dataset_bytes)
        dataset = validate(frame, spec, file, max_chars=ctx.settings.max_string_chars)
        validate_s = time.perf_counter() - t0
        from shared.pipeline.train import SPLIT_METHOD, fit, split_columns

        result = fit(dataset.frame, spec)
    except DatasetError as exc:
        where = quarantine(ctx.storage, blob_name, exc.message, code=exc.code, details={**exc.details, "run_id": run_id})
        ctx.runs.update_status(model, run_id, state="quarantined", quarantine=where,
                               error={"stage": "validate", "code": exc.code, "message": exc.message})
        return StageResult(False, run_id, where)
    except Exception as exc:
        if is_transient(exc):
            raise
        failure = as_permanent(exc, "TRAINING_FAILED")
        ctx.runs.update_status(model, run_id, state="failed",
                               error={"stage": "train", "code": failure.code, "message": failure.message})
        log.error("%s run %s failed at train: %s", model, run_id, failure.message)
        return StageResult(False, run_id, failure.message)
    supersede(ctx.storage, blob_name, run_id)

    t0 = time.perf_counter()
    pipeline_bytes = pickle.dumps(result.pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    holdout_bytes = _parquet_bytes(result.holdout)
    ctx.runs.put(model, run_id, HOLDOUT, holdout_bytes)
    ctx.runs.put(model, run_id, PIPELINE_PKL, pipeline_bytes)
    from shared.core.profile import build_profile
    from shared.registry.jsonio import dumps

    predictions = result.pipeline.predict(result.holdout[list(spec.features)])
    profile_bytes = dumps(build_profile(dataset.frame, spec.numeric, spec.categorical, predictions,
                                        spec.is_classifier, seed=spec.seed, missing=dataset.missing))
    ctx.runs.put(model, run_id, PROFILE_JSON, profile_bytes)
    faults.point("train:after_artifacts")
    t_exam = time.perf_counter()
    from shared.pipeline import exam

    # A retraining dataset (it carries the origin column) may hold forged labels: it never
    # shapes the exam; it is judged on the exam as it stands.
    exam_source = ORIGIN_COLUMN not in frame.columns
    if exam_source:
        exam_ref = exam.add_holdout(ctx.storage, spec, result.holdout, {
            "dataset": datasets.path(blob_name), "sha256": _sha(data), "run_id": run_id}).ref()
    else:
        current_exam = exam.latest(ctx.storage, model)
        exam_ref = current_exam.ref() if current_exam else None
    exam_s = time.perf_counter() - t_exam
    record = {
        "model": model,
        "run_id": run_id,
        "dataset": {
            "uri": ctx.storage.uri(datasets.CONTAINER, blob_name),
            "name": datasets.path(blob_name),
            "etag": etag,
            "sha256": _sha(data),
            "rows": dataset.rows,
            "bytes": len(data),
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
    save_s = time.perf_counter() - t0
    ctx.runs.update_status(
        model,
        run_id,
        state="trained",
        metrics=result.metrics,
        stages={
            "validate": {"seconds": validate_s},
            "fit": {"seconds": result.fit_seconds},
            "train": {"seconds": time.perf_counter() - started, "save_seconds": save_s},
            "exam_update": {"seconds": exam_s},
        },
    )
    owner = ctx.runs.claim_content(model, content_key, run_id)
    if owner != run_id:  # the same content was trained concurrently under another name
        return _duplicate(ctx, model, run_id, identity, owner)
    msg = RunMessage("trained", model, run_id, run_id, artifact_sha256=record["pipeline_sha256"])
    faults.point("train:before_send")
    ctx.bus.send(ctx.settings.queue_convert, msg.to_outgoing())
    log.info("trained %s run %s on %d rows: %s", model, run_id, dataset.rows, result.metrics)
    return StageResult(True, run_id, f"trained on {dataset.rows} rows", msg)


def _duplicate(ctx: Context, model: str, run_id: str, identity: dict[str, Any], earlier: str) -> StageResult:
    """Record ``run_id`` as a duplicate of ``earlier``: same bytes, same spec, no new version."""
    detail = (f"duplicate of run {earlier}: {identity['name']} has the same SHA-256 and the spec the "
              "same hash as the dataset that run trained on; no new version")
    ctx.runs.update_status(model, run_id, state="duplicate", duplicate_of=earlier, dataset=identity, reason=detail)
    log.info("%s run %s: %s", model, run_id, detail)
    return StageResult(True, run_id, detail)


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


def _fail_run(ctx: Context, msg: RunMessage, stage: str, exc: MlopsError) -> StageResult:
    ctx.runs.update_status(
        msg.model, msg.run_id, state="failed", error={"stage": stage, "code": exc.code, "message": exc.message, **exc.details}
    )
    log.error("%s run %s failed at %s: %s", msg.model, msg.run_id, stage, exc.message)
    return StageResult(False, msg.run_id, exc.message)


def _spec_for(ctx: Context, msg: RunMessage) -> ModelSpec:
    return ctx.specs.get(msg.model)


# -- convert ---------------------------------------------------------------------------------
def handle_convert(ctx: Context, msg: RunMessage) -> StageResult:
    """Convert the fitted pipeline to ONNX and prove parity on the hold-out rows."""
    from shared.pipeline.convert import check_parity, convert
    from shared.serving.graph import opsets

    model, run_id = msg.model, msg.run_id
    if ctx.runs.exists(model, run_id, CONVERT_JSON):
        record = ctx.runs.get_json(model, run_id, CONVERT_JSON)
        nxt = RunMessage("converted", model, run_id, msg.correlation_id, artifact_sha256=record["onnx_sha256"])
        ctx.bus.send(ctx.settings.queue_register, nxt.to_outgoing())
        return StageResult(True, run_id, "already converted; message re-sent", nxt)
    try:
        spec = _spec_for(ctx, msg)
        train = ctx.runs.get_json(model, run_id, TRAIN_JSON)
        pipeline = _load_pipeline(ctx, msg)
        holdout = _load_holdout(ctx, model, run_id, train["holdout_sha256"])
        t0 = time.perf_counter()
        onnx_bytes = convert(pipeline, spec)
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = check_parity(pipeline, onnx_bytes, holdout, spec)
        parity_s = time.perf_counter() - t0
    except (MlopsError, NotFound) as exc:
        if not exc.permanent:
            raise
        return _fail_run(ctx, msg, "convert", exc)
    ctx.runs.put(model, run_id, MODEL_ONNX, onnx_bytes)
    faults.point("convert:after_onnx")
    record = {
        "onnx_sha256": _sha(onnx_bytes),
        "onnx_bytes": len(onnx_bytes),
        "opsets": opsets(onnx_bytes),
        "parity": report.to_dict(),
    }
    ctx.runs.put_json(model, run_id, CONVERT_JSON, record)
    ctx.runs.update_status(
        model, run_id, state="converted", stages={"convert": {"seconds": convert_s}, "parity": {"seconds": parity_s}}
    )
    nxt = RunMessage("converted", model, run_id, msg.correlation_id, artifact_sha256=record["onnx_sha256"])
    ctx.bus.send(ctx.settings.queue_register, nxt.to_outgoing())
    return StageResult(True, run_id, f"converted; parity max abs diff {report.max_abs_diff:.3g}", nxt)


# -- register --------------------------------------------------------------------------------
def handle_register(ctx: Context, msg: RunMessage) -> StageResult:
    """Write the run as the next immutable version, manifest last."""
    from shared.pipeline.convert import input_schema

    model, run_id = msg.model, msg.run_id
    t0 = time.perf_counter()
    try:
        spec = _spec_for(ctx, msg)
        train = ctx.runs.get_json(model, run_id, TRAIN_JSON)
        conv = ctx.runs.get_json(model, run_id, CONVERT_JSON)
        onnx_bytes = ctx.runs.get(model, run_id, MODEL_ONNX)
        if _sha(onnx_bytes) != conv["onnx_sha256"] or conv["onnx_sha256"] != msg.artifact_sha256:
            raise IntegrityError(f"run (model={model}, run_id={run_id}): model.onnx changed since conversion")
        profile_bytes = ctx.runs.get(model, run_id, PROFILE_JSON)
        if _sha(profile_bytes) != train["profile_sha256"]:
            raise IntegrityError(f"run (model={model}, run_id={run_id}): profile.json changed since training")
    except (MlopsError, NotFound) as exc:
        if not exc.permanent:
            raise
        return _fail_run(ctx, msg, "register", exc)
    status = ctx.runs.status(model, run_id) or {}
    version = ctx.registry.allocate(model, run_id)
    manifest = {
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
        "onnx": {"file": MODEL_ONNX, "sha256": conv["onnx_sha256"], "bytes": conv["onnx_bytes"], "opsets": conv["opsets"]},
        "profile": {"file": PROFILE_JSON, "sha256": train["profile_sha256"]},
        "input_schema": input_schema(spec, onnx_bytes),
        "target": spec.target,
        "classes": train["classes"],
        "parity": conv["parity"],
        "stage_seconds": {k: v["seconds"] for k, v in status.get("stages", {}).items()},
    }
    manifest = ctx.registry.commit(model, version, onnx_bytes, manifest, extra={PROFILE_JSON: profile_bytes})
    ctx.runs.update_status(
        model, run_id, state="registered", version=version, stages={"register": {"seconds": time.perf_counter() - t0}}
    )
    nxt = RunMessage("registered", model, run_id, msg.correlation_id, version=version)
    faults.point("register:after_manifest")
    ctx.bus.send(ctx.settings.queue_promote, nxt.to_outgoing())
    return StageResult(True, run_id, f"registered as version {version}", nxt)


# -- promote ---------------------------------------------------------------------------------
class _Scorer:
    """Registered versions scored through ONNX Runtime, one session per version."""

    def __init__(self, ctx: Context, spec: ModelSpec, model: str) -> None:
        self.ctx, self.spec, self.model = ctx, spec, model

    def predict(self, version: int, manifest: dict[str, Any], frame: pd.DataFrame) -> Any:
        from shared.pipeline.convert import feeds_from_frame
        from shared.serving.graph import new_session, run_session

        schema = manifest["input_schema"]
        missing = [c["name"] for c in schema if c["name"] not in frame.columns]
        if missing:
            raise DatasetError(f"version {version} needs columns the evaluation rows lack: {', '.join(missing)}")
        session = new_session(self.ctx.registry.model_bytes(self.model, version, manifest))
        return run_session(session, feeds_from_frame(frame, schema), self.spec.is_classifier)

    def metrics(self, manifest: dict[str, Any], out: Any, frame: pd.DataFrame, rows: np.ndarray) -> dict[str, float] | None:
        """Metrics on the rows ``rows`` (a boolean mask) of ``frame`` from the run output ``out``."""
        from shared.pipeline.train import compute_metrics

        if not rows.any():
            return None
        y = frame[self.spec.target].to_numpy()[rows]
        try:
            if self.spec.is_classifier:
                return compute_metrics(self.spec, y, np.asarray(out.labels)[rows], np.asarray(out.probabilities)[rows],
                                       np.asarray(manifest["classes"]))
            return compute_metrics(self.spec, y, np.asarray(out.values)[rows])
        except ValueError:  # e.g. a single class among the rows: ROC AUC is undefined
            return None


def score_version(ctx: Context, spec: ModelSpec, model: str, version: int, holdout: pd.DataFrame) -> dict[str, float]:
    """A registered version's metrics on ``holdout``, computed through ONNX Runtime."""
    scorer = _Scorer(ctx, spec, model)
    manifest = ctx.registry.manifest(model, version)
    out = scorer.predict(version, manifest, holdout)
    metrics = scorer.metrics(manifest, out, holdout, np.ones(len(holdout), dtype=bool))
    if metrics is None:
        raise DatasetError(f"version {version}: metrics are undefined on these {len(holdout)} rows")
    return metrics


def decide(spec: ModelSpec, candidate: float, champion: float | None, where: str = "the candidate's hold-out") -> tuple[bool, str]:
    """The promotion rule on one set of rows: clear the floor; then be no worse than production by the margin."""
    metric, higher = spec.metric, spec.higher_is_better
    clears_floor = candidate >= spec.floor if higher else candidate <= spec.floor
    if not clears_floor:
        op = ">=" if higher else "<="
        return False, f"{metric} {candidate:.6g} on {where} does not clear the floor ({op} {spec.floor:g})"
    if champion is None:
        return True, f"{metric} {candidate:.6g} on {where} clears the floor {spec.floor:g}"
    allowance = spec.margin * abs(champion)
    if higher:
        ok = candidate >= champion - allowance
    else:
        ok = candidate <= champion + allowance
    verdict = "matches or beats" if ok else "is worse than"
    return ok, f"{metric} {candidate:.6g} {verdict} production's {champion:.6g} on {where} (margin {spec.margin:g})"


def _unseen_fraction(spec: ModelSpec, cand: dict[str, Any], champ: dict[str, Any] | None) -> tuple[float, str | None]:
    """The hold-out fraction under which a row was held out by both versions' splits."""
    from shared.pipeline.train import SPLIT_METHOD

    frac = cand.get("split", {}).get("holdout_fraction", spec.holdout_fraction)
    if champ is None:
        return frac, None
    split = champ.get("split", {})
    if split.get("method") != SPLIT_METHOD or split.get("key") != cand.get("split", {}).get("key"):
        return frac, (f"production v{champ['version']} was split another way ({split.get('method', 'random')}): "
                      "rows it trained on cannot be excluded")
    return min(frac, split["holdout_fraction"]), None


def _distinct(frame: pd.DataFrame, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, first)``: each row's index among the distinct feature rows, and where each first occurs."""
    hashed = pd.util.hash_pandas_object(frame[list(spec.features)], index=False).to_numpy()
    _, first, codes = np.unique(hashed, return_index=True, return_inverse=True)
    return codes, first


def _expand(out: Any, codes: np.ndarray) -> Any:
    """A session's output on the distinct rows, spread back over every row."""
    from dataclasses import replace as _replace

    return _replace(out, **{f: np.asarray(getattr(out, f))[codes] for f in ("values", "labels", "probabilities")
                           if getattr(out, f, None) is not None})


def evaluate(ctx: Context, spec: ModelSpec, model: str, version: int, manifest: dict[str, Any],
             holdout: pd.DataFrame, exam_rows: pd.DataFrame | None, champion: int | None) -> dict[str, Any]:
    """Score the candidate and production on the hold-out and exam rows neither trained on.

    Returns the per-set results and the verdict: promote only if every set with rows passes
    ``decide`` (the floor, then no worse than production beyond the margin).
    """
    from shared.pipeline.exam import SEQ
    from shared.pipeline.train import ROW_KEY, in_holdout

    scorer = _Scorer(ctx, spec, model)
    champ_manifest = ctx.registry.manifest(model, champion) if champion is not None else None
    frac, caveat = _unseen_fraction(spec, manifest, champ_manifest)
    cols = [*spec.features, spec.target, ROW_KEY]
    if spec.split_key and spec.split_key not in cols:
        cols.append(spec.split_key)
    sets = {"holdout": holdout}
    if exam_rows is not None:
        sets["exam"] = exam_rows
    # One frame, one run per version: scoring sessions are built once and run once, on each
    # distinct input once (with the default recency the exam repeats the hold-out's rows).
    frame = pd.concat([f[[c for c in cols if c in f.columns]].assign(_set=k) for k, f in sets.items()], ignore_index=True)
    unseen = in_holdout(frame[ROW_KEY].to_numpy(dtype=np.uint64), frac)
    codes, first = _distinct(frame, spec)
    distinct = frame.iloc[first]
    cand_out = _expand(scorer.predict(version, manifest, distinct), codes)
    champ_out, champ_error = None, None
    if champ_manifest is not None:
        try:
            champ_out = _expand(scorer.predict(champion, champ_manifest, distinct), codes)
        except DatasetError as exc:
            champ_error = f"production v{champion} could not be scored: {exc.message}"
            log.warning("%s", champ_error)
    results: dict[str, Any] = {}
    passed = True
    reasons = []
    for key, label in (("holdout", "the candidate's hold-out"), ("exam", "the exam")):
        if key not in sets:
            continue
        rows = (frame["_set"] == key).to_numpy() & unseen  # rows neither version trained on
        cand = scorer.metrics(manifest, cand_out, frame, rows)
        champ = scorer.metrics(champ_manifest, champ_out, frame, rows) if champ_out is not None else None
        entry: dict[str, Any] = {"rows": int(rows.sum()), "rows_total": int((frame["_set"] == key).sum()),
                                 "candidate": cand, "production": champ}
        if cand is None:
            entry.update(passed=None, reason=f"no rows of {label} that neither version trained on could be scored")
        else:
            ok, why = decide(spec, cand[spec.metric], champ[spec.metric] if champ else None,
                             f"{label} ({entry['rows']} rows)")
            entry.update(passed=ok, reason=why)
            passed = passed and ok
        reasons.append(entry["reason"])
        results[key] = entry
    if results.get("holdout", {}).get("passed") is None:
        passed = False  # the candidate's own hold-out must always be scored
    if "exam" in results and exam_rows is not None and SEQ in exam_rows:
        results["exam"]["sources"] = int(exam_rows[SEQ].nunique())
    notes = [n for n in (caveat, champ_error) if n]
    reason = "; ".join(reasons + notes)
    if champion is None:
        reason = "first version: " + reason
    return {"promoted": passed, "reason": reason, "unseen_fraction": frac, "sets": results}


def handle_promote(ctx: Context, msg: RunMessage, *, max_attempts: int = 5) -> StageResult:
    """Score candidate and production on the candidate's hold-out and the exam; move the alias if it wins."""
    from shared.pipeline import exam

    model, run_id, version = msg.model, msg.run_id, msg.version
    if version is None:
        return _fail_run(ctx, msg, "promote", DatasetError("promote message has no version"))
    t0 = time.perf_counter()
    try:
        spec = _spec_for(ctx, msg)
        manifest = ctx.registry.manifest(model, version)
        holdout = _load_holdout(ctx, model, run_id, manifest["holdout"]["sha256"])
        exam_ref = manifest.get("exam")
        exam_rows = exam.load(ctx.storage, model, exam_ref) if exam_ref else None
    except (MlopsError, NotFound) as exc:
        if not exc.permanent:
            raise
        return _fail_run(ctx, msg, "promote", exc)
    for _ in range(max_attempts):
        if ctx.registry.is_decided(model, version):
            return StageResult(True, run_id, "already decided")
        current = ctx.registry.alias(model, PRODUCTION)
        try:
            if current is not None and current.version == version:
                verdict = {"promoted": True, "reason": "already production", "sets": {}}
            else:
                verdict = evaluate(ctx, spec, model, version, manifest, holdout, exam_rows,
                                   current.version if current else None)
        except (MlopsError, NotFound) as exc:
            if not exc.permanent:
                raise
            return _fail_run(ctx, msg, "promote", exc)
        promoted, reason = verdict["promoted"], verdict["reason"]
        sets = verdict["sets"]
        cand_metrics = (sets.get("holdout") or {}).get("candidate")
        champ_metrics = (sets.get("holdout") or {}).get("production")
        if promoted and not (current is not None and current.version == version):
            try:
                ctx.registry.move_alias(
                    model,
                    PRODUCTION,
                    version,
                    expected=current,
                    event="promote",
                    reason=reason,
                    actor="pipeline",
                    details={"run_id": run_id, "candidate_metrics": cand_metrics, "champion_metrics": champ_metrics,
                             "exam": exam_ref and {k: exam_ref[k] for k in ("version", "sha256")}},
                )
            except PreconditionFailed:
                continue  # production moved meanwhile: decide again against the new one
            faults.point("promote:after_alias")
        decision = {
            "schema_version": 2,
            "model": model,
            "version": version,
            "run_id": run_id,
            "promoted": promoted,
            "reason": reason,
            "metric": spec.metric,
            "candidate_metrics": cand_metrics,
            "champion_version": current.version if current else None,
            "champion_metrics": champ_metrics,
            "holdout": sets.get("holdout"),
            "exam": {**(sets.get("exam") or {}), "version": exam_ref["version"], "sha256": exam_ref["sha256"],
                     "exam_rows": exam_ref["rows"]} if exam_ref else None,
            "unseen_fraction": verdict.get("unseen_fraction"),
            "dataset": manifest["dataset"]["name"],
            "exam_source": manifest.get("exam_source"),
            "decided_at": time.time(),
        }
        try:
            ctx.registry.record_decision(model, version, decision)
        except AlreadyExists:
            return StageResult(True, run_id, "already decided")
        if not promoted:
            ctx.registry.audit(model, "reject", decision)
        ctx.runs.update_status(
            model,
            run_id,
            state="promoted" if promoted else "rejected",
            decision=decision,
            stages={"promote": {"seconds": time.perf_counter() - t0}},
        )
        log.info("%s v%s %s: %s", model, version, "promoted" if promoted else "not promoted", reason)
        return StageResult(True, run_id, reason)
    raise PreconditionFailed(f"production alias of {model} kept moving; giving up after {max_attempts} attempts")


_QUEUE_STAGES = {"convert": handle_convert, "register": handle_register, "promote": handle_promote}


def run_stage(ctx: Context, stage: str, msg: RunMessage) -> StageResult:
    """Run one queue-triggered stage. A permanent failure of any kind, a library's included,
    is recorded as the run's failure on its first delivery; only transient ones raise."""
    try:
        return _QUEUE_STAGES[stage](ctx, msg)
    except Exception as exc:
        if is_transient(exc):
            raise
        return _fail_run(ctx, msg, stage, as_permanent(exc, f"{stage.upper()}_FAILED"))
