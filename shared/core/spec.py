"""Model specs: one declarative TOML file per model in ``models/``.

A spec names its task, target and features, an estimator from an allow-list of
scikit-learn classes that skl2onnx converts, the training split, the promotion rule and
the parity tolerances. Specs never name code to run. A bad spec raises ``SpecError``
naming the file and the key.
"""
from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.core import names
from shared.core.errors import ModelNotFound, SpecError
from shared.core.rollout_spec import KEYS as ROLLOUT_KEYS
from shared.core.rollout_spec import RolloutSpec, parse_rollout

TASKS = ("regression", "binary", "multiclass")
#: What a missing categorical value is fed to the model as, in training and serving alike.
#: Monitoring still tells the two apart (``shared.pipeline.data.Dataset.missing``,
#: ``shared.serving.protocols.batch.Batch.missing``).
MISSING_CATEGORY = ""

#: The columns the inference log writes for each row beside its features (and ``truth``, the
#: ground truth the monitor and the rollout evidence join to them; ``proba_<class>`` for each
#: class). A feature of one of these names overwrote the log's own column: its rows no longer
#: had their request id, row, time or version, so feedback never matched and no monitoring
#: window or rollout step ever saw them.
LOG_COLUMNS = ("request_id", "row", "time", "version", "latency_ms", "correlation_id", "error", "prediction",
               "truth")
LOG_COLUMN_PREFIX = "proba_"


def log_column_clash(column: str) -> str | None:
    """Why ``column`` cannot be a feature (a name the inference log uses itself), else None."""
    if column in LOG_COLUMNS or column.startswith(LOG_COLUMN_PREFIX):
        return (f"a column the inference log writes for itself ({', '.join(LOG_COLUMNS)}, "
                f"{LOG_COLUMN_PREFIX}<class>); rename it in the dataset")
    return None
#: Seconds a fit (or conversion) may run in its process: under the platform's 10-minute function timeout.
DEFAULT_TIME_BUDGET_SECONDS = 540.0

#: Estimators a spec may name: class name -> (module, tasks, wants scaled inputs).
ESTIMATORS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "RandomForestRegressor": ("sklearn.ensemble", ("regression",), False),
    "ExtraTreesRegressor": ("sklearn.ensemble", ("regression",), False),
    "GradientBoostingRegressor": ("sklearn.ensemble", ("regression",), False),
    "HistGradientBoostingRegressor": ("sklearn.ensemble", ("regression",), False),
    "DecisionTreeRegressor": ("sklearn.tree", ("regression",), False),
    "LinearRegression": ("sklearn.linear_model", ("regression",), True),
    "Ridge": ("sklearn.linear_model", ("regression",), True),
    "Lasso": ("sklearn.linear_model", ("regression",), True),
    "ElasticNet": ("sklearn.linear_model", ("regression",), True),
    "RandomForestClassifier": ("sklearn.ensemble", ("binary", "multiclass"), False),
    "ExtraTreesClassifier": ("sklearn.ensemble", ("binary", "multiclass"), False),
    "GradientBoostingClassifier": ("sklearn.ensemble", ("binary", "multiclass"), False),
    "HistGradientBoostingClassifier": ("sklearn.ensemble", ("binary", "multiclass"), False),
    "DecisionTreeClassifier": ("sklearn.tree", ("binary", "multiclass"), False),
    "LogisticRegression": ("sklearn.linear_model", ("binary", "multiclass"), True),
}

#: Metric name -> (tasks it applies to, higher is better).
METRICS: dict[str, tuple[tuple[str, ...], bool]] = {
    "accuracy": (("binary", "multiclass"), True),
    "f1": (("binary", "multiclass"), True),
    "roc_auc": (("binary", "multiclass"), True),
    "rmse": (("regression",), False),
    "mae": (("regression",), False),
    "r2": (("regression",), True),
}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed, validated model spec."""

    name: str
    task: str
    target: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    estimator: str
    params: dict[str, Any]
    holdout_fraction: float
    seed: int
    min_rows: int
    metric: str
    margin: float
    floor: float
    parity_rtol: float
    parity_atol: float
    #: Standardise numeric inputs; None means the estimator family's default (linear: yes).
    scale_numeric: bool | None = None
    #: The column whose value decides a row's side of the split; None: the row's features.
    split_key: str | None = None
    #: A categorical feature with more distinct values than this is refused.
    max_categories: int = 100
    exam: ExamSpec = field(default_factory=lambda: ExamSpec())
    #: Wall-clock seconds the train stage (read, validate, fit, evaluate) may take in its own
    #: process; over it, the process is ended and the run fails saying so. Under the
    #: platform's 10-minute function timeout by default.
    time_budget_seconds: float = DEFAULT_TIME_BUDGET_SECONDS
    #: A dataset larger than this many bytes is fitted by an Azure Machine Learning command
    #: job when the app's fit backend allows it (``MLOPS_FIT_BACKEND=azureml``); None: always
    #: in the app's own child process (shared/pipeline/azureml.py).
    azureml_above_bytes: int | None = None
    monitoring: MonitoringSpec = field(default_factory=lambda: MonitoringSpec())
    rollout: RolloutSpec = field(default_factory=lambda: RolloutSpec())
    description: str = ""
    source: str = ""
    sha256: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]


@dataclass(frozen=True)
class ExamSpec:
    """The promotion exam's recency and size (spec table ``[exam]``).

    The exam is the hold-out rows of the ``recent_datasets`` most recent datasets dropped
    into ``datasets/`` by people (retraining datasets never add rows), newest first and at
    most ``max_rows``. The default, 1, makes the newest dataset a person dropped the regime
    every candidate is judged in: a winter dataset lets a winter model win (concept drift),
    and a retraining dataset, whose hold-out may be forged feedback, is judged on it. A
    larger value also guards older regimes, at the price of holding back a regime change.
    """

    recent_datasets: int = 1
    max_rows: int = 20_000


@dataclass(frozen=True)
class MonitoringSpec:
    """Drift thresholds and the retraining policy (spec tables ``[monitoring]``, ``[retraining]``)."""

    psi: float = 0.2
    p_value: float = 0.01
    js: float = 0.1
    min_rows: int = 500
    performance_tolerance: float = 0.1  # relative degradation of the metric vs the hold-out
    breaches_to_retrain: int = 2
    retrain_cooldown_minutes: float = 60.0
    retrain_policy: str = "append"  # append | recent
    retrain_max_rows: int = 200_000


class _Reader:
    """Typed access to a TOML table that names the file and key on every error."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def fail(self, key: str, why: str) -> SpecError:
        return SpecError(f"{self.source}: key '{key}' {why}", file=self.source, key=key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is ...:
                    raise self.fail(key, "is missing")
                return default
            node = node[part]
        if kind is float and isinstance(node, int) and not isinstance(node, bool):
            node = float(node)
        if not isinstance(node, kind) or (isinstance(node, bool) and kind in (int, float)):
            names_ = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {names_}, not {type(node).__name__} {node!r}")
        return node

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        if not all(isinstance(v, str) and v for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        return tuple(value)


#: Every key a spec may hold, per table: anything else is a typo and refused, never defaulted.
ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "model": frozenset({"name", "task", "target", "description"}),
    "features": frozenset({"numeric", "categorical", "max_categories"}),
    "estimator": frozenset({"class", "params", "scale_numeric"}),
    "training": frozenset({"holdout_fraction", "seed", "min_rows", "split_key", "time_budget_seconds",
                            "azureml_above_bytes"}),
    "promotion": frozenset({"metric", "margin", "floor"}),
    "exam": frozenset({"recent_datasets", "max_rows"}),
    "parity": frozenset({"rtol", "atol"}),
    "monitoring": frozenset({"psi", "p_value", "js", "min_rows", "performance_tolerance",
                             "breaches_to_retrain", "retrain_cooldown_minutes"}),
    "retraining": frozenset({"policy", "max_rows"}),
    "rollout": ROLLOUT_KEYS,
}


def _check_keys(data: dict[str, Any], r: _Reader) -> None:
    for table, value in data.items():
        if table not in ALLOWED_KEYS:
            raise r.fail(table, f"is not a spec table; allowed: {', '.join(ALLOWED_KEYS)}")
        if not isinstance(value, dict):
            raise r.fail(table, "must be a table")
        unknown = sorted(set(value) - ALLOWED_KEYS[table])
        if unknown:
            raise r.fail(f"{table}.{unknown[0]}",
                         f"is not a known key; allowed: {', '.join(sorted(ALLOWED_KEYS[table]))}")


def parse_spec(text: str, source: str, expected_name: str | None = None) -> ModelSpec:
    """Parse and validate a spec's TOML ``text``; ``source`` names it in errors.

    Each table is read by a helper of its own; the order of the calls is the order the checks
    have always run in, so a spec with two mistakes is still told the same one first.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: not valid TOML: {exc}", file=source) from None
    r = _Reader(data, source)
    _check_keys(data, r)
    name, task, target = _model_table(r, expected_name)
    numeric, categorical = _feature_lists(r, target)
    estimator, params, scale_numeric = _estimator_table(r, task)
    training = _training_table(r)
    metric, margin, floor = _promotion_table(r, task)
    rtol = r.get("parity.rtol", float, 1e-5)
    atol = r.get("parity.atol", float, 1e-5)
    if rtol < 0 or atol < 0:
        raise r.fail("parity", "tolerances must not be negative")
    split_key = r.get("training.split_key", str, None)
    if split_key is not None and (not split_key or split_key == target):
        raise r.fail("training.split_key", "must name an id column (not the target)")
    max_categories = r.get("features.max_categories", int, 100)
    if not 2 <= max_categories <= 10_000:
        raise r.fail("features.max_categories", f"must be between 2 and 10000, not {max_categories}")
    exam = _exam_table(r)
    mon = _monitoring_tables(r)
    rollout = _rollout_table(r, data, task, margin, numeric + categorical)
    return ModelSpec(
        monitoring=mon,
        rollout=rollout,
        name=name,
        task=task,
        target=target,
        numeric=numeric,
        categorical=categorical,
        estimator=estimator,
        params=dict(params),
        holdout_fraction=training.holdout_fraction,
        seed=training.seed,
        min_rows=training.min_rows,
        metric=metric,
        margin=margin,
        floor=floor,
        parity_rtol=rtol,
        parity_atol=atol,
        scale_numeric=scale_numeric,
        split_key=split_key,
        max_categories=max_categories,
        exam=exam,
        time_budget_seconds=training.time_budget_seconds,
        azureml_above_bytes=training.azureml_above_bytes,
        description=r.get("model.description", str, ""),
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        raw=data,
    )


def _model_table(r: _Reader, expected_name: str | None) -> tuple[str, str, str]:
    """``[model]``: the name (valid, and the file's when one is expected), the task, the target."""
    name = r.get("model.name", str)
    try:
        names.model_name(name)
    except Exception as exc:
        raise r.fail("model.name", str(exc)) from None
    if expected_name is not None and name != expected_name:
        raise r.fail("model.name", f"is {name!r} but the file is named for {expected_name!r}")
    task = r.get("model.task", str)
    if task not in TASKS:
        raise r.fail("model.task", f"must be one of {', '.join(TASKS)}, not {task!r}")
    return name, task, r.get("model.target", str)


def _feature_lists(r: _Reader, target: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``[features]``'s numeric and categorical columns: at least one, none twice, not the target."""
    numeric = r.str_list("features.numeric")
    categorical = r.str_list("features.categorical")
    features = numeric + categorical
    if not features:
        raise r.fail("features", "must declare at least one numeric or categorical feature")
    if len(set(features)) != len(features):
        raise r.fail("features", "lists a column twice")
    if target in features:
        raise r.fail("model.target", f"names {target!r}, which is also a feature")
    for column in features:
        clash = log_column_clash(column)
        if clash:
            raise r.fail("features", f"names {column!r}, {clash}")
    return numeric, categorical


def _estimator_table(r: _Reader, task: str) -> tuple[str, dict[str, Any], bool | None]:
    """``[estimator]``: an allowed class that fits ``task``, its plain-valued params, scale_numeric."""
    estimator = r.get("estimator.class", str)
    if estimator not in ESTIMATORS:
        raise r.fail(
            "estimator.class",
            f"names {estimator!r}, which is not allowed; allowed: {', '.join(sorted(ESTIMATORS))}",
        )
    if task not in ESTIMATORS[estimator][1]:
        raise r.fail("estimator.class", f"{estimator} does not fit task {task!r}")
    params = r.get("estimator.params", dict, {})
    scale_numeric = r.get("estimator.scale_numeric", bool, None)
    for key, value in params.items():
        if not isinstance(value, (int, float, str, bool)) and value is not None:
            raise r.fail(f"estimator.params.{key}", "must be a number, string or boolean")
    return estimator, params, scale_numeric


@dataclass(frozen=True)
class _Training:
    """``[training]``'s keys but ``split_key`` (checked later, against the target)."""

    holdout_fraction: float
    seed: int
    min_rows: int
    time_budget_seconds: float
    azureml_above_bytes: int | None


def _training_table(r: _Reader) -> _Training:
    """``[training]``: the hold-out share, seed, minimum rows, time budget and Azure ML threshold."""
    holdout = r.get("training.holdout_fraction", float, 0.2)
    if not 0.05 <= holdout <= 0.5:
        raise r.fail("training.holdout_fraction", f"must be between 0.05 and 0.5, not {holdout}")
    seed = r.get("training.seed", int, 42)
    min_rows = r.get("training.min_rows", int, 50)
    if min_rows < 10:
        raise r.fail("training.min_rows", "must be at least 10")
    budget = r.get("training.time_budget_seconds", float, DEFAULT_TIME_BUDGET_SECONDS)
    if not 0 < budget <= 3600:
        raise r.fail("training.time_budget_seconds", f"must be in (0, 3600], not {budget}")
    azureml_above = r.get("training.azureml_above_bytes", int, None)
    if azureml_above is not None and azureml_above < 0:
        raise r.fail("training.azureml_above_bytes", f"must be a number of bytes (0 or more), not {azureml_above}")
    return _Training(holdout, seed, min_rows, budget, azureml_above)


def _promotion_table(r: _Reader, task: str) -> tuple[str, float, float]:
    """``[promotion]``: a metric of ``task``, the margin in [0, 1), a finite floor."""
    metric = r.get("promotion.metric", str)
    if metric not in METRICS or task not in METRICS[metric][0]:
        allowed = [m for m, (tasks, _) in METRICS.items() if task in tasks]
        raise r.fail("promotion.metric", f"must be one of {', '.join(allowed)} for {task}, not {metric!r}")
    margin = r.get("promotion.margin", float, 0.0)
    if not 0.0 <= margin < 1.0:
        raise r.fail("promotion.margin", f"must be in [0, 1), not {margin}")
    floor = r.get("promotion.floor", float)
    if not math.isfinite(floor):
        raise r.fail("promotion.floor", "must be finite")
    return metric, margin, floor


def _exam_table(r: _Reader) -> ExamSpec:
    """``[exam]``: how many recent datasets, and rows at most, make the promotion exam."""
    exam = ExamSpec(
        recent_datasets=r.get("exam.recent_datasets", int, 1),
        max_rows=r.get("exam.max_rows", int, 20_000),
    )
    if exam.recent_datasets < 1 or exam.max_rows < 1:
        raise r.fail("exam", "recent_datasets and max_rows must be at least 1")
    return exam


def _monitoring_tables(r: _Reader) -> MonitoringSpec:
    """``[monitoring]`` and ``[retraining]``: drift thresholds and the retraining policy."""
    mon = MonitoringSpec(
        psi=r.get("monitoring.psi", float, 0.2),
        p_value=r.get("monitoring.p_value", float, 0.01),
        js=r.get("monitoring.js", float, 0.1),
        min_rows=r.get("monitoring.min_rows", int, 500),
        performance_tolerance=r.get("monitoring.performance_tolerance", float, 0.1),
        breaches_to_retrain=r.get("monitoring.breaches_to_retrain", int, 2),
        retrain_cooldown_minutes=r.get("monitoring.retrain_cooldown_minutes", float, 60.0),
        retrain_policy=r.get("retraining.policy", str, "append"),
        retrain_max_rows=r.get("retraining.max_rows", int, 200_000),
    )
    if mon.retrain_policy not in ("append", "recent"):
        raise r.fail("retraining.policy", f"must be 'append' or 'recent', not {mon.retrain_policy!r}")
    if not 0 < mon.p_value < 1 or mon.psi <= 0 or not 0 < mon.js <= 1:
        raise r.fail("monitoring", "thresholds must be positive (p_value and js at most 1)")
    if mon.breaches_to_retrain < 1 or mon.min_rows < 1:
        raise r.fail("monitoring", "breaches_to_retrain and min_rows must be at least 1")
    return mon


def _rollout_table(r: _Reader, data: dict[str, Any], task: str, margin: float,
                   features: tuple[str, ...]) -> RolloutSpec:
    """``[rollout]`` (``shared.core.rollout_spec``), its routing field one of the features."""
    rollout = parse_rollout(data.get("rollout"), r.source, is_classifier=task != "regression", promotion_margin=margin)
    if rollout.routing_field is not None and rollout.routing_field not in features:
        raise r.fail("rollout.routing_field", f"must name one of the features ({', '.join(features)}), "
                                              f"not {rollout.routing_field!r}")
    return rollout


class SpecCatalog:
    """The specs in a folder, read on demand and cached by file modification time."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, tuple[float, ModelSpec]] = {}

    def path(self, model: str) -> Path:
        return self.folder / f"{names.model_name(model)}.toml"

    def get(self, model: str) -> ModelSpec:
        """The spec of ``model``; ``ModelNotFound`` if there is no spec file."""
        path = self.path(model)
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            raise ModelNotFound(f"no spec for model {model!r} (expected {path.name} in models/)") from None
        cached = self._cache.get(model)
        if cached and cached[0] == mtime:
            return cached[1]
        spec = parse_spec(path.read_text(encoding="utf-8"), f"models/{path.name}", expected_name=model)
        self._cache[model] = (mtime, spec)
        return spec

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml"))
