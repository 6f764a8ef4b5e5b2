"""The evidence a promotion decision rests on: candidate and production scored through ONNX
Runtime on the rows neither trained on (the candidate's hold-out and the exam).

This is the I/O half of promotion (sessions, registry reads); the rule that judges the evidence
is ``shared.policies.promotion``, which does none.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from shared.context import Context
from shared.core.errors import DatasetError
from shared.core.records import Manifest
from shared.core.spec import ModelSpec
from shared.pipeline.convert import feeds_from_frame
from shared.pipeline.exam import SEQ
from shared.pipeline.train import ROW_KEY, SPLIT_METHOD, compute_metrics, in_holdout
from shared.policies.promotion import Evidence, SetScores
from shared.serving.graph import new_session, run_session

log = logging.getLogger("mlops.pipeline")

#: The sets a decision scores, in order, and how its reason names each.
SETS = (("holdout", "the candidate's hold-out"), ("exam", "the exam"))


class Scorer:
    """Registered versions scored through ONNX Runtime, one session per version."""

    def __init__(self, ctx: Context, spec: ModelSpec, model: str) -> None:
        self.ctx, self.spec, self.model = ctx, spec, model

    def predict(self, version: int, manifest: Manifest, frame: pd.DataFrame) -> Any:
        """The version's session run on ``frame``; ``DatasetError`` if the rows lack its inputs."""
        schema = manifest["input_schema"]
        missing = [c["name"] for c in schema if c["name"] not in frame.columns]
        if missing:
            raise DatasetError(f"version {version} needs columns the evaluation rows lack: {', '.join(missing)}")
        session = new_session(self.ctx.registry.model_bytes(self.model, version, manifest))
        return run_session(session, feeds_from_frame(frame, schema), self.spec.is_classifier)

    def metrics(self, manifest: Manifest, out: Any, frame: pd.DataFrame, rows: np.ndarray) -> dict[str, float] | None:
        """Metrics on the rows ``rows`` (a boolean mask) of ``frame`` from the run output ``out``."""
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
    scorer = Scorer(ctx, spec, model)
    manifest = ctx.registry.manifest(model, version)
    out = scorer.predict(version, manifest, holdout)
    metrics = scorer.metrics(manifest, out, holdout, np.ones(len(holdout), dtype=bool))
    if metrics is None:
        raise DatasetError(f"version {version}: metrics are undefined on these {len(holdout)} rows")
    return metrics


def unseen_fraction(spec: ModelSpec, cand: Manifest, champ: Manifest | None) -> tuple[float, str | None]:
    """The hold-out fraction under which a row was held out by both versions' splits, and why
    rows production trained on could not be excluded (when they could not)."""
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
    return replace(out, **{f: np.asarray(getattr(out, f))[codes] for f in ("values", "labels", "probabilities")
                           if getattr(out, f, None) is not None})


def gather(ctx: Context, spec: ModelSpec, model: str, version: int, manifest: Manifest,
           holdout: pd.DataFrame, exam_rows: pd.DataFrame | None, champion: int | None) -> Evidence:
    """Score the candidate and production (``champion``; None: there is none) on the rows of the
    hold-out and the exam that neither trained on."""
    scorer = Scorer(ctx, spec, model)
    champ_manifest = ctx.registry.manifest(model, champion) if champion is not None else None
    frac, caveat = unseen_fraction(spec, manifest, champ_manifest)
    cols = [*spec.features, spec.target, ROW_KEY]
    if spec.split_key and spec.split_key not in cols:
        cols.append(spec.split_key)
    sets = {"holdout": holdout}
    if exam_rows is not None:
        sets["exam"] = exam_rows
    # One frame, one run per version: scoring sessions are built once and run once, on each
    # distinct input once (with the default recency the exam repeats the hold-out's rows).
    frame = pd.concat([f[[c for c in cols if c in f.columns]].assign(_set=k) for k, f in sets.items()],
                      ignore_index=True)
    unseen = in_holdout(frame[ROW_KEY].to_numpy(dtype=np.uint64), frac)
    codes, first = _distinct(frame, spec)
    distinct = frame.iloc[first]
    cand_out = _expand(scorer.predict(version, manifest, distinct), codes)
    champ_out, champ_error = None, None
    if champion is not None and champ_manifest is not None:
        try:
            champ_out = _expand(scorer.predict(champion, champ_manifest, distinct), codes)
        except DatasetError as exc:
            champ_error = f"production v{champion} could not be scored: {exc.message}"
            log.warning("%s", champ_error)
    scores = []
    for key, label in SETS:
        if key not in sets:
            continue
        in_set = (frame["_set"] == key).to_numpy()
        rows = in_set & unseen  # rows neither version trained on
        scores.append(SetScores(
            key, label, int(rows.sum()), int(in_set.sum()),
            scorer.metrics(manifest, cand_out, frame, rows),
            scorer.metrics(champ_manifest, champ_out, frame, rows)
            if champ_manifest is not None and champ_out is not None else None,
            int(sets[key][SEQ].nunique()) if key == "exam" and SEQ in sets[key] else None,
        ))
    return Evidence(tuple(scores), frac, caveat, champ_error)
