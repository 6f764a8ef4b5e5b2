"""Telemetry to Application Insights through OpenTelemetry, on only when configured.

With ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set, ``open_telemetry`` configures the Azure
Monitor distro (azure-monitor-opentelemetry) once per process and returns a
:class:`Telemetry` that reports:

* one trace per run: the blob-triggered ``train`` stage starts it, and each stage's span
  is the parent of the next, through a W3C ``traceparent`` field in the run messages
  (:func:`current_traceparent`, read by ``RunMessage.to_outgoing``);
* a span per predict request, sampled (``MLOPS_TRACE_PREDICT_SAMPLE``, default 1%);
* metrics: requests, latency and rows served per model and version, failed requests by
  code, runs by outcome, each monitor run's drift share, retraining requests;
* alerts: the ``mlops.alerts`` warning log records (``Context.alert``) go out as
  warning-level traces, through the distro's handler on the ``mlops`` logger.

Without it, ``open_telemetry`` returns :data:`OFF`, whose ``enabled`` is False: callers on
the request path test that flag and do nothing else, and this module imports no
OpenTelemetry code, so serving's start-up and latency do not change (measured in
docs/benchmarks.md).
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.core.settings import Settings

log = logging.getLogger("mlops.telemetry")

#: the telemetry whose spans run messages carry (set by ``Telemetry.activate``)
_active: Telemetry | None = None
_configured = False


class Off:
    """Telemetry when it is not configured: every method does nothing."""

    enabled = False

    def stage(self, name: str, model: str = "", traceparent: str | None = None, **attributes: Any):
        return nullcontext()

    def predicted(self, model: str, version: int, rows: int, latency_ms: float, request_id: str) -> None:
        pass

    def request_failed(self, code: str, status: int) -> None:
        pass

    def run_outcome(self, model: str, outcome: str) -> None:
        pass

    def drift_share(self, model: str, version: int | None, share: float) -> None:
        pass

    def retrain(self, model: str) -> None:
        pass


OFF = Off()


#: The traceparent a stage running in a process of its own inherited from its caller's span.
_inherited: str | None = None


def inherit_traceparent(traceparent: str | None) -> None:
    """In a child process running a stage: its messages continue the caller's trace."""
    global _inherited
    _inherited = traceparent


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span, when telemetry is on (else one inherited from a
    parent process, or None; no import)."""
    return _inherited if _active is None else _active.traceparent()


class Telemetry:
    """OpenTelemetry spans and metrics of the system (see the module docstring)."""

    enabled = True

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None, *, predict_sample: float = 0.01,
                 rng: random.Random | None = None) -> None:
        # here: opentelemetry loads only when Application Insights is configured
        from opentelemetry import metrics, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._propagator = TraceContextTextMapPropagator()
        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("mlops")
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("mlops")
        self.predict_sample = predict_sample
        self._rng = rng or random.Random()
        self._requests = meter.create_counter("mlops.requests", unit="{request}",
                                              description="predictions answered, per model and version")
        self._latency = meter.create_histogram("mlops.request.duration", unit="ms",
                                               description="time to answer a prediction, per model and version")
        self._rows = meter.create_counter("mlops.rows_served", unit="{row}", description="rows predicted")
        self._failures = meter.create_counter("mlops.request.errors", unit="{request}",
                                              description="requests refused or failed, by error code")
        self._runs = meter.create_counter("mlops.runs", unit="{run}",
                                          description="training runs ended, by outcome")
        self._drift = meter.create_gauge("mlops.drift_share", unit="1",
                                         description="share of drifted features at the last monitor run")
        self._retrains = meter.create_counter("mlops.retrains", unit="{request}",
                                              description="retraining datasets assembled")

    def activate(self) -> Telemetry:
        """Make this the telemetry whose context run messages carry."""
        global _active
        _active = self
        return self

    # -- traces ---------------------------------------------------------------------------
    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def stage(self, name: str, model: str = "", traceparent: str | None = None, **attributes: Any) -> Iterator[Any]:
        """A span for one stage of a run, child of the message's ``traceparent``; without one
        (the blob-triggered start of a run) the root of a new trace."""
        # here: opentelemetry loads only when Application Insights is configured
        from opentelemetry.context import Context as OtelContext
        from opentelemetry.trace import SpanKind

        parent = self._propagator.extract({"traceparent": traceparent}) if traceparent else OtelContext()
        attrs = {"mlops.stage": name, "mlops.model": model,
                 **{f"mlops.{k}": v for k, v in attributes.items() if v is not None}}
        with self.tracer.start_as_current_span(f"mlops.{name}", context=parent, kind=SpanKind.CONSUMER,
                                               attributes=attrs) as span:
            yield span

    # -- serving --------------------------------------------------------------------------
    def predicted(self, model: str, version: int, rows: int, latency_ms: float, request_id: str) -> None:
        """Count one answered prediction; a sampled one also becomes a span (drawn after the
        fact, so an unsampled request costs no span at all)."""
        attrs: dict[str, str | int] = {"mlops.model": model, "mlops.version": version}
        self._requests.add(1, attrs)
        self._latency.record(latency_ms, attrs)
        self._rows.add(rows, attrs)
        if self.predict_sample > 0 and self._rng.random() < self.predict_sample:
            end = time.time_ns()
            span = self.tracer.start_span("mlops.predict", start_time=end - int(latency_ms * 1e6),
                                          attributes={**attrs, "mlops.rows": rows, "mlops.request_id": request_id})
            span.end(end_time=end)

    def request_failed(self, code: str, status: int) -> None:
        self._failures.add(1, {"mlops.code": code, "http.status_code": status})

    # -- the pipeline and monitoring ------------------------------------------------------------
    def run_outcome(self, model: str, outcome: str) -> None:
        """A run ended: promoted, rejected, refused (dataset quarantined) or failed."""
        self._runs.add(1, {"mlops.model": model, "mlops.outcome": outcome})

    def drift_share(self, model: str, version: int | None, share: float) -> None:
        self._drift.set(share, {"mlops.model": model, "mlops.version": version or 0})

    def retrain(self, model: str) -> None:
        self._retrains.add(1, {"mlops.model": model})


def open_telemetry(settings: Settings) -> Telemetry | Off:
    """:data:`OFF` unless Application Insights is configured; then the Azure Monitor distro,
    set up once per process (authenticated with the app's identity when
    ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` names one)."""
    global _configured
    if not settings.appinsights_connection_string:
        return OFF
    if not _configured:
        # here: the Azure Monitor distro loads only when Application Insights is configured
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=settings.appinsights_connection_string,
            credential=_credential(settings.appinsights_authentication),
            logger_name="mlops",  # alerts and stage logs; not the SDKs' chatter
            enable_live_metrics=False,
        )
        _configured = True
    return Telemetry(predict_sample=settings.trace_predict_sample).activate()


def _credential(authentication: str) -> Any:
    """``ClientId=<id>;Authorization=AAD`` (the platform's format) -> that managed identity."""
    parts = dict(p.split("=", 1) for p in authentication.split(";") if "=" in p)
    if parts.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential  # here: only for Entra ID authentication

    return ManagedIdentityCredential(client_id=parts.get("ClientId") or None)


def record_outcome(ctx: Any, stage: str, run: Any, result: Any) -> None:
    """Count a run that ended at ``stage``: failed anywhere, or promoted/rejected at promote.
    A redelivered promote ("already decided") is not counted twice."""
    if not result.ok:
        ctx.telemetry.run_outcome(run.model, "failed")
    elif stage == "promote" and result.detail != "already decided":
        state = (ctx.runs.status(run.model, run.run_id) or {}).get("state")
        if state in ("promoted", "rejected"):
            ctx.telemetry.run_outcome(run.model, state)
