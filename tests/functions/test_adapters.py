"""Each function called with the library's real input types, on a real context."""
from __future__ import annotations

import asyncio
import inspect
import json

import azure.functions as func
import pytest
from azure.functions.servicebus import ServiceBusMessage

from functions import http_api, pipeline, root, train
from models.breast_cancer_data import generate as cancer
from shared.pipeline.messages import RunMessage
from tests.conftest import to_csv


@pytest.fixture(autouse=True)
def installed(ctx):
    root.use(ctx)
    yield ctx
    root.use(None)


def user(fn):
    """The user function as the worker calls it (coroutines run to completion)."""
    target = fn.build().get_user_function()

    def call(*args, **kwargs):
        result = target(*args, **kwargs)
        return asyncio.run(result) if inspect.isawaitable(result) else result

    return call


def sb_message(body: bytes) -> ServiceBusMessage:
    return ServiceBusMessage(body=body, message_id="m", application_properties={}, user_properties={}, delivery_count=1)


def http(method: str, url: str, body: bytes = b"", **route) -> func.HttpRequest:
    return func.HttpRequest(method, url, headers={}, params={}, route_params=route, body=body)


def run_blob(ctx, name: str, data: bytes) -> None:
    info = ctx.storage.put("datasets", name, data)
    stream = func.blob.InputStream(data=data, name=f"datasets/{name}", length=len(data),
                                   blob_properties={"ETag": info.etag}, metadata={})
    user(train.train)(stream)


def drive_queues(ctx) -> None:
    for queue, fn in ((ctx.settings.queue_convert, pipeline.convert), (ctx.settings.queue_register, pipeline.register),
                      (ctx.settings.queue_promote, pipeline.promote)):
        for m in ctx.bus.receive(queue, max_messages=10):
            user(fn)(sb_message(m.body))
            ctx.bus.complete(m)


def test_blob_and_queue_functions_carry_a_run_to_production(ctx):
    run_blob(ctx, "breast_cancer/b.csv", to_csv(cancer()))
    drive_queues(ctx)
    assert ctx.registry.alias("breast_cancer").version == 1
    rows = cancer().drop(columns="target").head(3).to_dict("records")
    resp = user(http_api.predict)(http("POST", "/api/models/breast_cancer/predict",
                                       json.dumps({"instances": rows}).encode(), name="breast_cancer"))
    assert resp.status_code == 200
    body = json.loads(resp.get_body())
    assert body["version"] == 1 and len(body["predictions"]) == 3
    assert resp.headers["x-request-id"] == body["request_id"]


def test_a_refused_dataset_completes_without_raising(ctx):
    run_blob(ctx, "breast_cancer/empty.csv", b"")
    [q] = ctx.storage.list("quarantine", "breast_cancer/")
    assert "is empty" in json.loads(ctx.storage.get("quarantine", q.name).data)["reason"]


@pytest.mark.parametrize("body", [b"not json", b"{}", json.dumps({"schema_version": 99}).encode(),
                                  RunMessage("registered", "wind_power", "abc", "c", version=1).to_outgoing().body])
def test_malformed_or_misrouted_messages_complete_without_raising(ctx, body):
    user(pipeline.convert)(sb_message(body))  # returns: the message is completed, not retried


def test_unknown_model_is_404_and_no_production_is_503(ctx):
    resp = user(http_api.predict)(http("POST", "/", b'{"instances": []}', name="nope"))
    assert resp.status_code == 404 and json.loads(resp.get_body())["error"]["code"] == "MODEL_NOT_FOUND"
    resp = user(http_api.predict)(http("POST", "/", b'{"instances": [{}]}', name="wind_power"))
    assert resp.status_code == 503
    assert "no production version" in json.loads(resp.get_body())["error"]["message"]


@pytest.mark.parametrize(
    "body,status,fragment",
    [
        (b"", 400, "empty"),
        (b"{bad", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"rows": []}', 400, "exactly one of"),
        (b'{"instances": [{"mean_radius": 1}]}', 400, "missing field 'mean_texture'"),
    ],
)
def test_bad_payloads_get_400_naming_the_field(ctx, body, status, fragment):
    run_blob(ctx, "breast_cancer/b.csv", to_csv(cancer()))
    drive_queues(ctx)
    resp = user(http_api.predict)(http("POST", "/", body, name="breast_cancer"))
    assert resp.status_code == status
    assert fragment in json.loads(resp.get_body())["error"]["message"]


def test_type_errors_name_field_and_row(ctx):
    run_blob(ctx, "breast_cancer/b.csv", to_csv(cancer()))
    drive_queues(ctx)
    rows = cancer().drop(columns="target").head(3).to_dict("records")
    rows[2]["worst_area"] = "big"
    resp = user(http_api.predict)(http("POST", "/", json.dumps({"instances": rows}).encode(), name="breast_cancer"))
    err = json.loads(resp.get_body())["error"]
    assert resp.status_code == 400 and err["details"] == {"field": "worst_area", "row": 2}


def test_invalid_model_name_is_400(ctx):
    resp = user(http_api.get_model)(http("GET", "/", name="..%2F..%2Fetc"))
    assert resp.status_code == 400 and json.loads(resp.get_body())["error"]["code"] == "INVALID_NAME"


def test_listing_details_and_rollback(ctx):
    run_blob(ctx, "breast_cancer/a.csv", to_csv(cancer()))
    drive_queues(ctx)
    run_blob(ctx, "breast_cancer/b.csv", to_csv(cancer().sample(frac=1.0, random_state=3)))
    drive_queues(ctx)
    listing = json.loads(user(http_api.list_models)(http("GET", "/api/models")).get_body())
    assert {m["name"] for m in listing["models"]} == {"breast_cancer", "wind_power"}
    detail = json.loads(user(http_api.get_model)(http("GET", "/", name="breast_cancer")).get_body())
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    if detail["aliases"]["production"] != 2:  # the pipeline may keep v1; the operator moves it
        resp = user(http_api.set_alias)(http("PUT", "/", b'{"version": 2}', name="breast_cancer", alias="production"))
        assert resp.status_code == 200
    resp = user(http_api.set_alias)(http("POST", "/", b'{"version": 1, "reason": "bad on Mondays"}',
                                         name="breast_cancer", alias="production"))
    assert resp.status_code == 200 and json.loads(resp.get_body())["previous"] == 2
    assert ctx.registry.alias("breast_cancer").version == 1
    assert ctx.registry.audit_log("breast_cancer")[-1]["event"] == "rollback"
    resp = user(http_api.set_alias)(http("POST", "/", b'{"version": 9}', name="breast_cancer", alias="production"))
    assert resp.status_code == 404


def test_health_is_ok(ctx):
    resp = user(http_api.health)(http("GET", "/api/health"))
    assert resp.status_code == 200 and json.loads(resp.get_body())["status"] == "ok"


# -- a 503 says why, whole, and asks for a retry only when waiting can help ------------------------
def test_a_quarantined_latest_dataset_503s_with_its_whole_reason_and_no_retry_after(ctx):
    # 40 column names, each twice: the refusal names them all, a reason of about 1,500 characters.
    names = [f"measurement_{i:02d}_of_the_left_petal_cm" for i in range(40)]
    run_blob(ctx, "breast_cancer/dupes.csv", (",".join(names + names) + "\n" + ",".join(["1"] * 80) + "\n").encode())
    reason = ctx.runs.latest("breast_cancer")["error"]["message"]
    assert "duplicate column names" in reason and len(reason) > 1000
    for fn, message_of in ((http_api.predict, lambda b: b["error"]["message"]),
                           (http_api.invocations, lambda b: b["message"]),
                           (http_api.metadata_v2, lambda b: b["error"])):
        resp = user(fn)(http("POST", "/", b'{"instances": [{}]}', name="breast_cancer"))
        assert resp.status_code == 503 and "retry-after" not in resp.headers, fn
        message = message_of(json.loads(resp.get_body()))
        # Bounded, cut between words, the cause kept: the run, its outcome, and the reason's start.
        assert len(message) <= 700 and "was quarantined" in message and "duplicate column names" in message
        kept, _, tail = message.partition("... (")
        assert tail.endswith(" characters)")
        quoted = kept.split("was quarantined: ", 1)[1]
        assert reason.startswith(quoted) and reason[len(quoted)] in " ,", (quoted[-20:], reason[len(quoted):][:20])


def test_a_short_503_reason_is_whole(ctx):
    run_blob(ctx, "breast_cancer/empty.csv", b"")
    reason = ctx.runs.latest("breast_cancer")["error"]["message"]
    resp = user(http_api.predict)(http("POST", "/", b'{"instances": [{}]}', name="breast_cancer"))
    body = json.loads(resp.get_body())["error"]
    assert resp.status_code == 503 and "retry-after" not in resp.headers
    assert body["message"].endswith(f"was quarantined: {reason}") and body["details"]["outcome"] == "quarantined"


def test_a_run_in_progress_503s_with_retry_after(ctx):
    run_blob(ctx, "breast_cancer/b.csv", to_csv(cancer()))  # trained; convert, register, promote still to come
    for fn in (http_api.predict, http_api.invocations):
        resp = user(fn)(http("POST", "/", b'{"instances": [{}]}', name="breast_cancer"))
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5", fn
        assert "is still running" in resp.get_body().decode()


def test_no_run_at_all_503s_without_retry_after(ctx):
    resp = user(http_api.predict)(http("POST", "/", b'{"instances": [{}]}', name="wind_power"))
    assert resp.status_code == 503 and "retry-after" not in resp.headers
    assert "drop" in json.loads(resp.get_body())["error"]["message"]


# -- routes declared once: the document's query bounds are the handlers' ------------------------------
def test_query_bounds_in_the_document_are_the_ones_the_handlers_enforce(ctx):
    from functions import runs_api
    from shared.core.limits import REPORT_HISTORY
    from shared.registry.runs import OUTCOMES

    doc = json.loads(user(http_api.openapi)(http("GET", "/api/openapi.json")).get_body())
    params = {(path, p["name"]): p["schema"] for path, ops in doc["paths"].items() for op in ops.values()
              for p in op["parameters"] if p["in"] == "query"}
    assert params[("/models/{name}/monitoring/reports", "limit")]["maximum"] == REPORT_HISTORY
    assert params[("/models/{name}/runs", "limit")]["maximum"] == runs_api.RUNS_LIMIT.maximum
    assert params[("/models/{name}/runs", "outcome")]["enum"] == list(OUTCOMES)
    too_many = func.HttpRequest("GET", "/", headers={}, params={"limit": str(REPORT_HISTORY + 1)},
                                route_params={"name": "wind_power"}, body=b"")
    resp = user(http_api.monitoring_reports)(too_many)
    assert resp.status_code == 400 and f"from 1 to {REPORT_HISTORY}" in json.loads(resp.get_body())["error"]["message"]
    # Each protocol's error schema is the envelope its handlers answer with.
    assert doc["components"]["schemas"]["MlflowError"]["required"] == ["error_code", "message"]
    assert doc["paths"]["/models/{name}/invocations"]["post"]["responses"]["503"]["content"]["application/json"][
        "schema"]["$ref"] == "#/components/schemas/MlflowError"
