"""OpenTelemetry, read back from in-memory exporters: one trace per run through the real
adapters and messages, sampled predict spans, the metrics, alerts as warning records; and
nothing of it (not even an import) when Application Insights is not configured."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from functions import http_api, monitor, root, train
from shared.core import telemetry
from shared.core.settings import Settings
from shared.core.telemetry import OFF, Telemetry, open_telemetry
from shared.monitoring.monitor import settle_seconds
from shared.pipeline.messages import RunMessage
from tests.adapter_run import predict, run_to_production
from tests.conftest import ROOT
from tests.functions.test_adapters import http, sb_message, user


@pytest.fixture
def otel(ctx):
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    tel = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]), predict_sample=1.0).activate()
    ctx.use_telemetry(tel)
    root.use(ctx)
    yield tel, spans, reader
    root.use(None)
    telemetry._active = None


def points(reader, name: str) -> list[tuple[dict, float]]:
    """(attributes, value) of every point of metric ``name`` (histograms: their count)."""
    data = reader.get_metrics_data()
    out = []
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out.append((dict(p.attributes), getattr(p, "value", getattr(p, "count", None))))
    return out


def test_a_run_is_one_trace_across_its_stages_carried_by_the_messages(ctx, otel):
    tel, spans, reader = otel
    bodies = run_to_production(ctx)
    assert ctx.registry.alias("breast_cancer").version == 1
    by_name = {s.name: s for s in spans.get_finished_spans()}
    stages = [by_name[f"mlops.{n}"] for n in ("train", "convert", "register", "promote")]
    assert len({s.context.trace_id for s in stages}) == 1  # one trace per run
    assert stages[0].parent is None  # the blob trigger starts it
    for parent, child in zip(stages, stages[1:]):
        assert child.parent.span_id == parent.context.span_id  # each stage a child of the one that sent
    # ... through a W3C traceparent in each message, naming the sending stage's span
    assert [b["event"] for b in bodies] == ["trained", "converted", "registered"]
    for body, sender in zip(bodies, stages):
        assert body["traceparent"].startswith(f"00-{sender.context.trace_id:032x}-{sender.context.span_id:016x}-")
    assert stages[1].attributes["mlops.run_id"] == bodies[0]["run_id"]
    assert points(reader, "mlops.runs") == [({"mlops.model": "breast_cancer", "mlops.outcome": "promoted"}, 1)]


def test_predict_metrics_per_model_and_version_and_sampled_spans(ctx, otel):
    tel, spans, reader = otel
    run_to_production(ctx)
    spans.clear()
    for rows in (1, 5, 20):
        assert predict(rows).status_code == 200
    tel.predict_sample = 0.0  # unsampled requests make no span, and still count
    assert predict(2).status_code == 200
    attrs = {"mlops.model": "breast_cancer", "mlops.version": 1}
    assert points(reader, "mlops.requests") == [(attrs, 4)]
    assert points(reader, "mlops.rows_served") == [(attrs, 28)]
    assert points(reader, "mlops.request.duration") == [(attrs, 4)]
    predicts = [s for s in spans.get_finished_spans() if s.name == "mlops.predict"]
    assert sorted(s.attributes["mlops.rows"] for s in predicts) == [1, 5, 20]
    assert all(s.end_time > s.start_time for s in predicts)
    bad = user(http_api.predict)(http("POST", "/api/models/breast_cancer/predict", b"{nope", name="breast_cancer"))
    assert bad.status_code == 400
    assert points(reader, "mlops.request.errors") == [({"mlops.code": "INVALID_REQUEST", "http.status_code": 400}, 1)]


def test_a_refused_dataset_counts_as_refused_and_a_retrain_is_counted(ctx, otel):
    tel, spans, reader = otel
    bad = b"not,a,dataset\n1,2,3\n"
    info = ctx.storage.put("datasets", "breast_cancer/bad.csv", bad)
    user(train.train)(func.blob.InputStream(data=bad, name="datasets/breast_cancer/bad.csv", length=len(bad),
                                            blob_properties={"ETag": info.etag}, metadata={}))
    assert points(reader, "mlops.runs") == [({"mlops.model": "breast_cancer", "mlops.outcome": "refused"}, 1)]
    run_to_production(ctx)
    msg = RunMessage("retrain_requested", "breast_cancer", "retrain-1", "retrain-1")
    user(monitor.retrain)(sb_message(msg.to_outgoing().body))
    assert points(reader, "mlops.retrains") == [({"mlops.model": "breast_cancer"}, 1)]
    assert "mlops.retrain" in {s.name for s in spans.get_finished_spans()}


def test_the_drift_share_of_a_monitor_run_is_a_gauge(ctx, otel):
    tel, spans, reader = otel
    ctx.settings = dataclasses.replace(ctx.settings, inference_log_flush_seconds=0.2)  # a short settling wait
    run_to_production(ctx)
    assert predict(150).status_code == 200  # enough logged rows for a verdict (min_rows 100)
    ctx.inference_log.flush()
    # The monitor's window ends this long before it runs (rows may still sit in a server's buffer).
    time.sleep(settle_seconds(ctx) + 0.1)
    user(monitor.monitor)(TimerRequest())
    [(attrs, share)] = points(reader, "mlops.drift_share")
    assert attrs == {"mlops.model": "breast_cancer", "mlops.version": 1} and 0.0 <= share <= 1.0
    assert "mlops.monitor" in {s.name for s in spans.get_finished_spans()}


def test_alerts_are_warning_log_records(ctx):
    exporter = InMemoryLogExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)  # what the distro attaches to the "mlops" logger
    logger = logging.getLogger("mlops")
    logger.addHandler(handler)
    try:
        ctx.alert("breast_cancer", "drift", {"report": "r1"})
    finally:
        logger.removeHandler(handler)
    [record] = exporter.get_finished_logs()
    rec = record.log_record
    assert rec.severity_text == "WARN" and "ALERT" in str(rec.body)
    assert rec.attributes["mlops.alert"] == "drift" and rec.attributes["mlops.model"] == "breast_cancer"


def test_without_a_connection_string_telemetry_is_off():
    assert open_telemetry(Settings.from_env({})) is OFF and not OFF.enabled
    assert RunMessage("trained", "m", "r", "c").to_outgoing().body.find(b"traceparent") == -1


_CONFIGURED = """
import json, sys
from shared.monitoring.monitor import settle_seconds
from shared.core.settings import Settings
from shared.core.telemetry import open_telemetry
from opentelemetry import trace
tel = open_telemetry(Settings.from_env({
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/",
    "MLOPS_TRACE_PREDICT_SAMPLE": "0.25"}))
print(json.dumps({"enabled": tel.enabled, "sample": tel.predict_sample,
                  "provider": type(trace.get_tracer_provider()).__module__,
                  "handlers": [type(h).__name__ for h in __import__("logging").getLogger("mlops").handlers]}))
"""


def test_with_a_connection_string_the_azure_monitor_distro_is_configured():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "APPLICATIONINSIGHTS_"))}
    out = subprocess.run([sys.executable, "-c", _CONFIGURED], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["enabled"] and got["sample"] == 0.25
    assert got["provider"].startswith("opentelemetry.sdk.trace")
    assert "LoggingHandler" in got["handlers"]


_OFF = """
import json, sys
from functions import root
from shared.context import Context
from shared.monitoring.monitor import settle_seconds
from shared.core.settings import Settings
ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": sys.argv[1]}))
root.use(ctx)
from tests.adapter_run import predict, run_to_production
run_to_production(ctx)
assert predict(3).status_code == 200
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor")))))
ctx.close()  # stop the background threads before the interpreter does
"""


def test_when_off_a_run_and_predictions_import_no_opentelemetry(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "APPLICATIONINSIGHTS_"))}
    out = subprocess.run([sys.executable, "-c", _OFF, str(tmp_path / "data")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
