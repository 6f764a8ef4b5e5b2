"""Settings, read once from the environment into a frozen object.

Nothing here runs at import time: ``Settings.from_env()`` is called by the composition
root (``functions/root.py``) or by a test, which passes the result on explicitly.
Every setting is listed, with a working local value, in ``local.settings.example.json``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"setting {key}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"setting {key}={raw!r} is not a number") from None


def _choice(env: Mapping[str, str], key: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(key, "").strip().lower() or default
    if value not in allowed:
        raise ValueError(f"setting {key}={value!r} must be one of {', '.join(allowed)}")
    return value


def _share(env: Mapping[str, str], key: str, default: float, most: float) -> float:
    """A share in [0, ``most``]; out-of-range values are clamped (a pacing knob, not a contract)."""
    return min(max(_float(env, key, default), 0.0), most)


@dataclass(frozen=True)
class Settings:
    """Every knob of the system; built by :meth:`from_env`, passed in explicitly.

    Each field's description is the ``#:`` comment block above it (or the ``#`` comment after
    it), which ``docs/hooks/settings_md.py`` turns into the settings table.
    """

    #: The embedded backends' folder: ``blobs/<container>/<name>``, ``bus.sqlite3``, ``queues/``.
    data_dir: Path = PROJECT_ROOT / ".data"
    #: Where the model specs (``<model>.toml``) are read from.
    models_dir: Path = PROJECT_ROOT / "models"
    #: Blob storage: ``local`` (files under the data folder) or ``azure`` (Azure Blob Storage or Azurite).
    storage_backend: str = "local"
    #: A connection string (Azurite or Azure); it must name a queue endpoint too, for the poison queue.
    storage_connection_string: str = ""
    #: The account's blob URL, used with a managed identity instead of a connection string.
    storage_account_url: str = ""
    storage_queue_url: str = ""  # the poison queue's service (identity-based connections)
    storage_client_id: str = ""  # a user-assigned managed identity's client id
    #: The message bus: ``local`` (SQLite) or ``azure`` (Service Bus).
    bus_backend: str = "local"
    #: A Service Bus connection string.
    bus_connection_string: str = ""
    #: The Service Bus namespace, used with a managed identity instead of a connection string.
    bus_namespace: str = ""
    bus_client_id: str = ""  # a user-assigned managed identity's client id
    #: Queue of the convert stage.
    queue_convert: str = "model-convert"
    #: Queue of the register stage.
    queue_register: str = "model-register"
    #: Queue of the promote stage.
    queue_promote: str = "model-promote"
    #: Queue of retraining requests (sent by the monitor).
    queue_retrain: str = "model-retrain"
    #: Deliveries before a message is dead-lettered (local bus; in Azure the queue's own setting applies).
    bus_max_delivery_count: int = 10
    #: Peek-lock duration (local bus; the host renews it while a function runs).
    bus_lock_seconds: float = 60.0
    #: Larger datasets are quarantined, as file and as decoded data (a Parquet file whose footer
    #: declares more, or whose rows decode to more, is refused before it is held).
    max_dataset_bytes: int = 200 * 1024 * 1024
    #: Larger request bodies get 413.
    max_request_bytes: int = 4 * 1024 * 1024
    #: Larger batches get 400; also the ``maxItems`` of the OpenAPI document.
    max_batch_rows: int = 10_000
    #: Longer string values (features, feedback labels) get 400 naming the field; a dataset whose
    #: categorical feature holds a longer value is quarantined (no request could carry it).
    max_string_chars: int = 256
    #: How often a worker checks the production alias (a conditional read, off the request path).
    alias_check_seconds: float = 2.0
    #: Share of requests written to the inference log.
    inference_log_sample: float = 1.0
    #: How often the inference log's buffer is written as Parquet.
    inference_log_flush_seconds: float = 5.0
    #: The inference log buffer's bound in bytes (rows beyond it are dropped and counted in ``GET
    #: /api/health``).
    inference_log_max_bytes: int = 64 * 1024 * 1024
    #: The longest window a monitoring run looks back over.
    monitor_window_minutes: float = 60.0
    #: Share of drifted features at which a monitoring run calls dataset drift.
    drift_share: float = 0.5
    #: Where alerts go (breaches, retraining requests, integrity failures).
    queue_alerts: str = "model-alerts"
    appinsights_connection_string: str = ""  # telemetry is on only when this is set
    appinsights_authentication: str = ""  # "ClientId=<id>;Authorization=AAD": the identity that sends it
    trace_predict_sample: float = 0.01  # share of predict requests traced as spans
    #: How long a pipeline stage waits out a transient storage fault (full disk, I/O error,
    #: throttling) before failing its delivery; well under the 10-minute function timeout.
    transient_retry_seconds: float = 120.0
    #: ``process`` runs each pipeline stage in a child process within its time budget; ``inline``
    #: in the calling process (for debugging only).
    fit_isolation: str = "process"
    #: CPU priority of a stage's process: ``idle`` (runs only on a core nothing else wants), ``low``
    #: (nice 19) or ``normal``.
    fit_priority: str = "idle"
    #: While serving wants the CPU, the share of the time a stage's process is held stopped
    #: (0-0.95; 0 leaves it to the priority).
    fit_yield: float = 0.75
    #: The deployed commit, recorded in each version's manifest beside the digest of the sources.
    code_version: str = ""
    #: Which functions this app runs: ``serving`` (HTTP), ``pipeline`` (blob, queue, timer) or ``all``.
    app_role: str = "all"
    #: Where the blob trigger's events come from: ``eventgrid`` (Azure) or ``polling`` (local).
    blob_trigger_source: str = "polling"
    #: Guarded rollout (``MLOPS_ROLLOUT``, on | off): on, a candidate that passes the offline gate
    #: against production goes through its spec's ``[rollout]`` steps instead of replacing it at
    #: once. ``off``: every candidate that passes replaces production at once (as before rollouts).
    rollouts: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Parse the settings from ``env`` (default: ``os.environ``); fail loudly on nonsense."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("MLOPS_DATA_DIR", "").strip() or ".data")
        if not data_dir.is_absolute():
            data_dir = PROJECT_ROOT / data_dir
        models_dir = Path(env.get("MLOPS_MODELS_DIR", "").strip() or "models")
        if not models_dir.is_absolute():
            models_dir = PROJECT_ROOT / models_dir
        return cls(
            data_dir=data_dir,
            models_dir=models_dir,
            storage_backend=_choice(env, "MLOPS_STORAGE_BACKEND", "local", ("local", "azure")),
            storage_connection_string=env.get("MlopsStorage", "").strip(),
            storage_account_url=env.get("MlopsStorage__blobServiceUri", "").strip(),
            storage_queue_url=env.get("MlopsStorage__queueServiceUri", "").strip(),
            storage_client_id=env.get("MlopsStorage__clientId", "").strip(),
            bus_backend=_choice(env, "MLOPS_BUS_BACKEND", "local", ("local", "azure")),
            bus_connection_string=env.get("ServiceBusConnection", "").strip(),
            bus_namespace=env.get("ServiceBusConnection__fullyQualifiedNamespace", "").strip(),
            bus_client_id=env.get("ServiceBusConnection__clientId", "").strip(),
            queue_convert=env.get("MLOPS_QUEUE_CONVERT", "").strip() or "model-convert",
            queue_register=env.get("MLOPS_QUEUE_REGISTER", "").strip() or "model-register",
            queue_promote=env.get("MLOPS_QUEUE_PROMOTE", "").strip() or "model-promote",
            queue_retrain=env.get("MLOPS_QUEUE_RETRAIN", "").strip() or "model-retrain",
            bus_max_delivery_count=_int(env, "MLOPS_BUS_MAX_DELIVERY_COUNT", 10),
            bus_lock_seconds=_float(env, "MLOPS_BUS_LOCK_SECONDS", 60.0),
            max_dataset_bytes=_int(env, "MLOPS_MAX_DATASET_BYTES", 200 * 1024 * 1024),
            max_request_bytes=_int(env, "MLOPS_MAX_REQUEST_BYTES", 4 * 1024 * 1024),
            max_batch_rows=_int(env, "MLOPS_MAX_BATCH_ROWS", 10_000),
            max_string_chars=_int(env, "MLOPS_MAX_STRING_CHARS", 256),
            alias_check_seconds=_float(env, "MLOPS_ALIAS_CHECK_SECONDS", 2.0),
            inference_log_sample=_float(env, "MLOPS_INFERENCE_LOG_SAMPLE", 1.0),
            inference_log_flush_seconds=_float(env, "MLOPS_INFERENCE_LOG_FLUSH_SECONDS", 5.0),
            inference_log_max_bytes=_int(env, "MLOPS_INFERENCE_LOG_MAX_BYTES", 64 * 1024 * 1024),
            monitor_window_minutes=_float(env, "MLOPS_MONITOR_WINDOW_MINUTES", 60.0),
            drift_share=_float(env, "MLOPS_DRIFT_SHARE", 0.5),
            queue_alerts=env.get("MLOPS_QUEUE_ALERTS", "").strip() or "model-alerts",
            appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip(),
            appinsights_authentication=env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "").strip(),
            trace_predict_sample=_float(env, "MLOPS_TRACE_PREDICT_SAMPLE", 0.01),
            transient_retry_seconds=_float(env, "MLOPS_TRANSIENT_RETRY_SECONDS", 120.0),
            fit_isolation=_choice(env, "MLOPS_FIT_ISOLATION", "process", ("process", "inline")),
            fit_priority=_choice(env, "MLOPS_FIT_PRIORITY", "idle", ("idle", "low", "normal")),
            fit_yield=_share(env, "MLOPS_FIT_YIELD", 0.75, 0.95),
            code_version=env.get("MLOPS_CODE_VERSION", "").strip()[:64],
            app_role=_choice(env, "MLOPS_APP_ROLE", "all", ("serving", "pipeline", "all")),
            blob_trigger_source=_choice(env, "MLOPS_BLOB_TRIGGER_SOURCE", "polling", ("polling", "eventgrid")),
            rollouts=_choice(env, "MLOPS_ROLLOUT", "on", ("on", "off")) == "on",
        )
