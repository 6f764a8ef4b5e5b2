"""``mlops init``: a model spec written from a dataset, checked as the pipeline will check it.

What it decides, and why:

* **features**: every column but the target. A column of numbers (or, in a CSV, text that
  parses as numbers in every filled cell) is numeric; text is categorical. Then the dataset
  is put through the pipeline's own gate (``shared.data.validate``) with the candidate spec,
  and each column the gate refuses (a datetime, binary, nested or list column, more distinct
  values than ``features.max_categories``, a value longer than a request may send, an empty
  column) is left out with the gate's own reason. A constant column is left out too: it
  carries nothing to learn from.
* **task**: from the target: text or booleans are classes (two: ``binary``, more:
  ``multiclass``); numbers with at most 20 distinct integer values, each in at least 5 rows, are classes too; other
  numbers are ``regression``.
* **estimator**: a random forest of the task (robust to scale and mixed columns; its ONNX
  conversion keeps every split decision exact).
* **metric and floor**: ``roc_auc`` (binary), ``accuracy`` (multiclass) or ``rmse``; the floor
  from a cross-validated baseline of that very pipeline (``shared.train.build_pipeline``):
  the folds' mean less three standard deviations (plus, for an error), and never worse than
  a model that ignores its inputs (the majority class, or the target's mean).
* **monitoring.min_rows**: 100 for a dataset of fewer than 5,000 rows (so a window of modest
  traffic gets a verdict), else the default 500.

The spec is written only after ``shared.spec.parse_spec`` accepts it and the dataset passes
``shared.data.validate`` and the hold-out split under it.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from shared.core.rollout_spec import RolloutSpec, step_label

if TYPE_CHECKING:  # for annotations only: the pipeline's modules load only when init runs
    from shared.core.spec import ModelSpec
    from shared.pipeline.data import Dataset

__all__ = ["Decision", "InitError", "InitResult", "build_spec"]

#: An integer target with at most this many distinct values is a class label.
MAX_CLASSES = 20
#: ... and each value in at least this many rows (20 rows of body weights are not 18 classes).
MIN_CLASS_ROWS = 5
#: Rows the cross-validated baseline fits on at most (a sample beyond): init stays seconds.
BASELINE_ROWS = 20_000
SMALL_DATASET_ROWS = 5_000
ESTIMATOR_PARAMS = {"n_estimators": 100, "n_jobs": 1}

#: The rollout a new spec gets: the defaults, written out.
ROLLOUT = RolloutSpec()


class InitError(Exception):
    """The dataset cannot make a spec; the message says why."""


@dataclass(frozen=True)
class Decision:
    """What ``init`` decided about one column (or one setting), and why."""

    column: str
    role: str  # numeric | categorical | target | refused | setting
    why: str


@dataclass
class InitResult:
    """The spec's text, where it goes, and every decision with its reason."""

    model: str
    path: Path
    text: str
    task: str
    metric: str
    floor: float
    baseline: dict[str, float]
    decisions: list[Decision] = field(default_factory=list)
    rows: int = 0


def default_model_name(dataset: Path) -> str:
    """A valid model name from a file name: ``Wine Quality.csv`` -> ``wine_quality``."""
    name = re.sub(r"[^a-z0-9_-]+", "_", dataset.stem.lower()).strip("_-")
    if not name or not name[0].isalpha():
        name = f"m_{name}" if name else "model"
    return name[:63]


def _read(dataset: Path, max_bytes: int) -> pd.DataFrame:
    from shared.pipeline.data import read_table

    try:
        data = dataset.read_bytes()
    except OSError as exc:
        raise InitError(f"cannot read {dataset}: {exc.strerror or exc}") from None
    return read_table(data, dataset.name, max_bytes=max_bytes)


def _looks_numeric(series: pd.Series, declared: str | None) -> bool:
    if declared is not None:
        return declared in ("int", "float", "decimal", "bool")
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return True
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        filled = series.dropna()
        filled = filled[filled.astype(str).str.strip() != ""]
        if len(filled) == 0:
            return False
        if not all(isinstance(v, str) for v in filled.head(1000)):
            # Python objects (datetimes, bytes, lists...): let the gate name what they are
            return not all(isinstance(v, (str, int, bool)) for v in filled.head(1000))
        return bool(pd.to_numeric(filled, errors="coerce").notna().all())
    return True  # datetime, duration...: offered as numeric so the gate refuses it by name


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (for messages)."""
    return value.item() if hasattr(value, "item") else value


def infer_task(target: pd.Series) -> tuple[str, str]:
    """(task, why) from the target column's values."""
    filled = target.dropna()
    distinct = filled.nunique()
    if distinct < 2:
        raise InitError(f"target {target.name!r} has {distinct} distinct value(s): nothing to learn")
    textual = not (pd.api.types.is_numeric_dtype(filled) or pd.api.types.is_bool_dtype(filled))
    if textual:
        numbers = pd.to_numeric(filled, errors="coerce")
        if numbers.notna().all():  # a CSV's numbers arrive as text
            filled, textual = numbers, False
    if textual or pd.api.types.is_bool_dtype(filled):
        kind = "binary" if distinct == 2 else "multiclass"
        return kind, f"the target holds {distinct} labels"
    values = filled.to_numpy(dtype=float)
    integral = bool(np.all(values == np.round(values)))
    smallest = int(filled.value_counts().min())
    if integral and distinct <= MAX_CLASSES and smallest >= MIN_CLASS_ROWS:
        kind = "binary" if distinct == 2 else "multiclass"
        return kind, (f"the target holds {distinct} distinct integers (at most {MAX_CLASSES}, each in at least "
                      f"{MIN_CLASS_ROWS} rows: class labels)")
    why = ("non-integer numbers" if not integral else f"{distinct} distinct integers (over {MAX_CLASSES})"
           if distinct > MAX_CLASSES else f"{distinct} distinct integers, one in only {smallest} row(s): a quantity")
    return "regression", f"the target holds {why}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        inner = ", ".join(_toml_value(v) for v in value)
        return f"[{inner}]" if len(inner) < 80 else "[\n    " + ",\n    ".join(_toml_value(v) for v in value) + ",\n]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def render(tables: dict[str, dict[str, Any]], comments: dict[str, str], header: list[str]) -> str:
    """The spec as TOML: tables in order, a comment after a key where ``comments`` has one."""
    lines = [f"# {h}" for h in header]
    for table, values in tables.items():
        lines.append("")
        lines.append(f"[{table}]")
        for key, value in values.items():
            note = comments.get(f"{table}.{key}")
            lines.append(f"{key} = {_toml_value(value)}" + (f"  # {note}" if note else ""))
    return "\n".join(lines) + "\n"


def _round_floor(value: float, higher_is_better: bool) -> float:
    """The floor rounded to 3 significant digits, towards the lenient side."""
    if value == 0 or not math.isfinite(value):
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 2)
    return round(float((math.floor if higher_is_better else math.ceil)(value / scale) * scale), 10)


def _baseline(frame: pd.DataFrame, spec, seed: int) -> dict[str, float]:
    """Cross-validated score of the spec's pipeline and of a model that ignores its inputs."""
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    from shared.pipeline.train import build_pipeline

    if len(frame) > BASELINE_ROWS:
        frame = frame.sample(BASELINE_ROWS, random_state=seed)
    x, y = frame[list(spec.features)], frame[spec.target]
    scoring = {"roc_auc": "roc_auc", "accuracy": "accuracy", "rmse": "neg_root_mean_squared_error"}[spec.metric]
    if spec.is_classifier:
        smallest = int(y.value_counts().min())
        folds = StratifiedKFold(n_splits=max(2, min(5, smallest)), shuffle=True, random_state=seed)
        dummy = DummyClassifier(strategy="most_frequent")
    else:
        folds = KFold(n_splits=5, shuffle=True, random_state=seed)
        dummy = DummyRegressor(strategy="mean")
    scores = cross_val_score(build_pipeline(spec), x, y, cv=folds, scoring=scoring)
    trivial = cross_val_score(dummy, x, y, cv=folds, scoring=scoring)
    sign = -1.0 if scoring.startswith("neg_") else 1.0
    return {"mean": float(sign * scores.mean()), "std": float(scores.std()), "folds": float(len(scores)),
            "trivial": float(sign * trivial.mean())}


def build_spec(dataset: Path, target: str, *, model: str | None = None, models_dir: Path,
               max_categories: int = 100, task: str | None = None, exclude: tuple[str, ...] = (),
               categorical: tuple[str, ...] = (), max_string_chars: int = 256,
               max_dataset_bytes: int = 200 * 1024 * 1024) -> InitResult:
    """Decide a spec for ``dataset`` predicting ``target`` and prove it against the gate.

    Raises ``InitError`` (or the pipeline's own ``DatasetError``/``SpecError``) when no spec can be made.
    """
    from shared.core import names
    from shared.core.errors import MlopsError
    from shared.core.spec import METRICS, parse_spec
    from shared.pipeline.data import validate
    from shared.pipeline.train import split

    name = model or default_model_name(dataset)
    try:
        names.model_name(name)
    except MlopsError as exc:
        raise InitError(exc.message) from None
    frame = _read(dataset, max_dataset_bytes)
    _check_named_columns(dataset, frame, target, (*exclude, *categorical))
    decisions: list[Decision] = []
    if task is None:
        task, why = infer_task(frame[target])
    else:
        why = "given with --task"
    decisions.append(Decision(target, "target", f"{task}: {why}"))
    numeric, cats = _offered_columns(frame, target, exclude, categorical, decisions)
    metric = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}[task]
    higher = METRICS[metric][1]
    estimator = "RandomForestRegressor" if task == "regression" else "RandomForestClassifier"
    rows = len(frame)
    min_rows = 50 if rows >= 100 else 10
    if rows < min_rows:
        raise InitError(f"{dataset.name} has {rows} rows; a spec needs at least 10 (training.min_rows)")
    monitoring_rows = 100 if rows < SMALL_DATASET_ROWS else 500

    def tables(floor: float) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {
            "model": {"name": name, "task": task, "target": target,
                      "description": f"Written by mlops init from {dataset.name} ({rows} rows)."},
            "features": {"numeric": numeric, "categorical": cats, "max_categories": max_categories},
            "estimator": {"class": estimator, "params": dict(ESTIMATOR_PARAMS)},
            "training": {"holdout_fraction": 0.2, "seed": 42, "min_rows": min_rows},
            "promotion": {"metric": metric, "margin": 0.01, "floor": floor},
            "parity": {"rtol": 1e-4, "atol": 1e-5},
            "monitoring": {"min_rows": monitoring_rows},
            # the rollout defaults, written out so a user sees what a second version goes through
            "rollout": {"mode": ROLLOUT.mode, "steps": list(ROLLOUT.steps), "bake_seconds": ROLLOUT.bake_seconds,
                        "min_rows": ROLLOUT.min_rows},
        }
        if task == "regression":
            # float32 sums of leaf values: relative to the target's scale
            scale = float(pd.to_numeric(frame[target], errors="coerce").abs().max() or 1.0)
            out["parity"]["atol"] = float(f"{max(1e-5, scale * 1e-6):.2g}")
        return out

    source = f"models/{name}.toml"
    spec, validated = _through_the_gate(frame, dataset, source, name, lambda: render(tables(0.0), {}, []),
                                        numeric, cats, decisions, max_string_chars)
    for column in numeric:
        decisions.append(Decision(column, "numeric", "numbers" + (" (text that parses as numbers)"
                                                                     if frame[column].dtype == object else "")))
    for column in cats:
        distinct = validated.frame[column].nunique()
        decisions.append(Decision(column, "categorical",
                                  f"labels: {distinct} distinct, within max_categories {max_categories}"))
    base = _baseline(validated.frame, spec, seed=42)
    floor = _floor(base, higher)
    comments = {
        "promotion.floor": (f"{int(base['folds'])}-fold CV of this pipeline: {metric} {base['mean']:.4g} "
                            f"± {base['std']:.2g}; inputs ignored: {base['trivial']:.4g}"),
        "promotion.metric": "higher is better" if higher else "lower is better",
        "promotion.margin": "a candidate may be 1% worse than production and still replace it",
        "monitoring.min_rows": "logged rows a monitoring window needs for a verdict",
        "rollout.mode": "a new version earns production on live traffic (see docs/rollout.md); direct: at once",
        "rollout.steps": "shadow, then these shares (%) of requests, then promoted",
    }
    refused = [d for d in decisions if d.role == "refused"]
    header = [f"Written by `mlops init {dataset.name} --target {target}`; edit freely, then drop data with "
              f"`mlops drop FILE --model {name} --watch`."]
    header += [f"Left out: {d.column!r}: {d.why}" for d in refused]
    text = render(tables(floor), comments, header)
    spec = parse_spec(text, source, expected_name=name)  # exactly as the pipeline parses it
    validated = validate(frame, spec, dataset.name, max_chars=max_string_chars)
    split(validated.frame, spec)
    decisions.append(Decision("promotion", "setting", f"{metric}, floor {floor:g}: {comments['promotion.floor']}"))
    decisions.append(Decision("rollout", "setting",
                              f"{ROLLOUT.mode}: {' -> '.join(step_label(s) for s in ROLLOUT.steps)} -> 100%, each "
                              f"step at least {ROLLOUT.bake_seconds:g} s and {ROLLOUT.min_rows} rows"))
    decisions.append(Decision("monitoring", "setting",
                              f"min_rows {monitoring_rows}: the dataset has {rows} rows"
                              + (" (under 5,000: a smaller window gets a verdict)" if monitoring_rows == 100 else "")))
    return InitResult(model=name, path=models_dir / f"{name}.toml", text=text, task=task, metric=metric, floor=floor,
                      baseline=base, decisions=decisions, rows=rows)


def _check_named_columns(dataset: Path, frame: pd.DataFrame, target: str, named: tuple[str, ...]) -> None:
    """``InitError`` unless the target and every column named on the command line are in ``frame``."""
    if target not in frame.columns:
        raise InitError(f"{dataset.name} has no column {target!r}; its columns: "
                        + ", ".join(repr(str(c)) for c in list(frame.columns)[:30]))
    unknown = [c for c in named if c not in frame.columns]
    if unknown:
        raise InitError(f"{dataset.name} has no column {unknown[0]!r}")


def _offered_columns(frame: pd.DataFrame, target: str, exclude: tuple[str, ...], categorical: tuple[str, ...],
                     decisions: list[Decision]) -> tuple[list[str], list[str]]:
    """The numeric and categorical columns to offer the gate: all but the target, the excluded
    and the constant ones (each left out is added to ``decisions`` with its reason)."""
    from shared.core.spec import log_column_clash
    from shared.pipeline.data import ARROW_TYPES  # here: the pipeline's modules load only when init runs

    declared = frame.attrs.get(ARROW_TYPES, {})
    numeric, cats = [], []
    for column in frame.columns:
        column = str(column)
        if column == target:
            continue
        if column in exclude:
            decisions.append(Decision(column, "refused", "left out with --exclude"))
            continue
        clash = log_column_clash(column)
        if clash:
            decisions.append(Decision(column, "refused", clash))
            continue
        series = frame[column]
        filled = series.dropna()
        if len(filled) and filled.nunique() == 1 and len(filled) == len(series):
            reason = f"constant ({_plain(filled.iloc[0])!r} in every row): nothing to learn"
            decisions.append(Decision(column, "refused", reason))
            continue
        if column not in categorical and _looks_numeric(series, declared.get(column)):
            numeric.append(column)
        else:
            cats.append(column)
    return numeric, cats


def _through_the_gate(frame: pd.DataFrame, dataset: Path, source: str, name: str, text: Callable[[], str],
                      numeric: list[str], cats: list[str], decisions: list[Decision],
                      max_chars: int) -> tuple[ModelSpec, Dataset]:
    """The spec ``text()`` makes and the dataset validated under it, once the gate refuses no
    column: each refusal names one column, which is removed from ``numeric`` or ``cats`` (so
    ``text()`` leaves it out) and added to ``decisions`` with the gate's reason; then ask again."""
    # here: the pipeline's modules load only when init runs
    from shared.core.errors import DatasetError
    from shared.core.spec import parse_spec
    from shared.pipeline.data import validate

    while True:
        if not numeric and not cats:
            raise InitError(f"{dataset.name}: no column is left to learn from (see the refusals above)")
        spec = parse_spec(text(), source, expected_name=name)
        try:
            return spec, validate(frame, spec, dataset.name, max_chars=max_chars)
        except DatasetError as exc:
            column = exc.details.get("column")
            if column in numeric or column in cats:
                (numeric if column in numeric else cats).remove(column)
                decisions.append(Decision(column, "refused", exc.message.split(": ", 1)[-1]))
                continue
            raise


def _floor(base: dict[str, float], higher_is_better: bool) -> float:
    """The promotion floor from the cross-validated baseline: three standard deviations on the
    lenient side of its mean, never worse than ignoring the inputs (when that is worse than the
    mean), rounded to 3 significant digits."""
    if higher_is_better:
        floor = base["mean"] - 3 * base["std"]
        floor = max(floor, base["trivial"]) if base["trivial"] < base["mean"] else floor
    else:
        floor = base["mean"] + 3 * base["std"]
        floor = min(floor, base["trivial"]) if base["trivial"] > base["mean"] else floor
    return _round_floor(floor, higher_is_better)
