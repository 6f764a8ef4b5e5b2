"""Property-based: generated payloads, headers and route values thrown at every route of the
OpenAPI document never produce a 5xx, and every error body says what was wrong."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import resource
from urllib.parse import quote_from_bytes

import azure.functions as func
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from functions import http_api, rollout_api, root, runs_api
from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.settings import Settings
from tests.conftest import ROOT, to_csv, to_parquet
from tests.helpers import drain, drop

ROUTES = {
    ("/health", "GET"): http_api.health,
    ("/openapi.json", "GET"): http_api.openapi,
    ("/models", "GET"): http_api.list_models,
    ("/models/{name}", "GET"): http_api.get_model,
    ("/models/{name}/predict", "POST"): http_api.predict,
    ("/models/{name}/feedback", "POST"): http_api.feedback,
    ("/models/{name}/monitoring/latest", "GET"): http_api.monitoring_latest,
    ("/models/{name}/monitoring/reports", "GET"): http_api.monitoring_reports,
    ("/monitoring/plotly.min.js", "GET"): http_api.monitoring_plotly,
    ("/models/{name}/aliases/{alias}", "PUT"): http_api.set_alias,
    ("/v2/models/{name}", "GET"): http_api.metadata_v2,
    ("/v2/models/{name}/infer", "POST"): http_api.infer_v2,
    ("/v2", "GET"): http_api.v2_server_metadata,
    ("/v2/health/live", "GET"): http_api.v2_server_live,
    ("/v2/health/ready", "GET"): http_api.v2_server_ready,
    ("/v2/models/{name}/ready", "GET"): http_api.v2_model_ready,
    ("/v2/models/{name}/versions/{version}", "GET"): http_api.v2_version_metadata,
    ("/v2/models/{name}/versions/{version}/ready", "GET"): http_api.v2_version_ready,
    ("/v2/models/{name}/versions/{version}/infer", "POST"): http_api.infer_v2_version,
    ("/models/{name}/invocations", "POST"): http_api.invocations,
    ("/models/{name}/ping", "GET"): http_api.ping,
    ("/models/{name}/monitoring/reports/{report_id}", "GET"): http_api.monitoring_report,
    ("/models/{name}/runs", "GET"): runs_api.list_runs,
    ("/models/{name}/runs/{run_id}", "GET"): runs_api.get_run,
    ("/models/{name}/versions/{version}", "GET"): runs_api.get_version,
    ("/console/overview", "GET"): runs_api.console_overview,
    ("/console", "GET"): runs_api.console,
    ("/models/{name}/rollout", "GET"): rollout_api.get_rollout,
    ("/models/{name}/rollout/{action}", "POST"): rollout_api.rollout_action,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
CANCER_ROW = cancer().drop(columns="target").iloc[0].to_dict()
WIND_ROW = wind(1).drop(columns="power_kw").iloc[0].to_dict()
row_values = st.one_of(st.floats(allow_nan=False), st.integers(-10**40, 10**40), st.text(max_size=5), st.none(),
                       st.booleans())
near_valid = st.one_of(
    st.builds(lambda rows: {"instances": rows}, st.lists(st.fixed_dictionaries(
        {k: row_values for k in WIND_ROW}, optional={"extra": row_values}), max_size=4)),
    st.builds(lambda rows: {"inputs": rows},
              st.dictionaries(st.sampled_from(list(WIND_ROW) + ["zz"]), st.lists(row_values, max_size=3))),
    st.builds(lambda data: {"dataframe_split": {"columns": list(WIND_ROW), "data": data}},
              st.lists(st.lists(row_values, max_size=6), max_size=3)),
    st.builds(lambda t: {"inputs": t}, st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(list(WIND_ROW)), "shape": st.lists(st.integers(-2, 3), max_size=3),
         "datatype": st.sampled_from(["FP32", "BYTES", "INT64", "X"]), "data": st.lists(row_values, max_size=3)}),
        max_size=6)),
    st.builds(lambda items: {"feedback": items}, st.lists(st.dictionaries(
        st.sampled_from(["request_id", "row", "label", "value", "x"]), row_values), max_size=3)),
    st.builds(lambda v, r: {"version": v, "reason": r}, row_values, row_values),
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
names = st.one_of(st.sampled_from(["wind_power", "breast_cancer", "solar", ""]), st.text(max_size=30))


@pytest.fixture(scope="module")
def served(tmp_path_factory, example_models):
    data = tmp_path_factory.mktemp("fuzz")
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data), "MLOPS_MODELS_DIR": str(example_models),
                                                   "MLOPS_MAX_REQUEST_BYTES": "65536"}))
    drop(ctx, "wind_power", "w.parquet", to_parquet(wind(1000, seed=1)))
    drop(ctx, "breast_cancer", "b.csv", to_csv(cancer()))
    drain(ctx)
    root.use(ctx)
    yield ctx
    root.use(None)
    ctx.close()


def call(fn, req):
    result = fn.build().get_user_function()(req)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def test_the_document_is_valid_openapi_covers_every_route_and_names_each_models_inputs(served):
    resp = call(http_api.openapi, func.HttpRequest("GET", "http://localhost/api/openapi.json", headers={}, params={},
                                                   route_params={}, body=b""))
    doc = json.loads(resp.get_body())
    validate(doc)
    known = ("wind_power", "breast_cancer")
    listed = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops
              if not any(m in path for m in known)}
    assert listed == set(ROUTES) | {("/models/{name}/aliases/{alias}", "POST")}
    # Per model: every column required, no other; v2 tensors named; rows bounded.
    wind = doc["paths"]["/models/wind_power/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    rows = wind["oneOf"][2]["properties"]["dataframe_records"]
    assert rows["minItems"] == 1 and rows["maxItems"] == served.settings.max_batch_rows
    assert rows["items"]["required"] == list(WIND_ROW) and rows["items"]["additionalProperties"] is False
    infer = doc["paths"]["/v2/models/breast_cancer/infer"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]
    assert infer["properties"]["inputs"]["minItems"] == infer["properties"]["inputs"]["maxItems"] == 30
    feedback = doc["paths"]["/models/wind_power/feedback"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]
    assert feedback["properties"]["feedback"]["minItems"] == 1
    # Errors in each protocol's shape, with the statuses its codes map to.
    assert doc["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["400"]["content"]["application/json"][
        "schema"]["$ref"] == "#/components/schemas/V2Error"
    # 500: the version a request was routed to failed to run it (RUN_FAILED, logged for the rollout).
    assert set(doc["paths"]["/models/{name}/invocations"]["post"]["responses"]) == {"200", "400", "401", "404", "413",
                                                                                   "415", "500", "503"}


def test_every_http_function_is_in_the_document_table():
    # Every function the serving blueprints register is declared with its metadata, once.
    registered = [b.build().get_function_name()
                  for b in [*http_api.bp._function_builders, *runs_api.bp._function_builders,
                            *rollout_api.bp._function_builders]]
    assert sorted(r.name for r in http_api.api_routes()) == sorted(registered)
    assert len(set(registered)) == len(registered)


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for p, m in ROUTES])
def test_no_client_input_gets_a_5xx_and_errors_say_what_was_wrong(served, route):
    path, method = route
    fn = ROUTES[route]

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, name=names, alias=st.text(max_size=12), request_id=st.text(max_size=40),
           version=st.one_of(st.sampled_from(["1", "2", "0", "x", "²", "٣", "9" * 40]), st.text(max_size=6)),
           content_type=st.sampled_from(["application/json", "text/csv", "text/plain", "application/octet-stream"]),
           header_length=st.one_of(st.none(), st.integers(-5, 300).map(str)),
           query=st.dictionaries(st.sampled_from(["format", "code", "x", "predict_fn", "limit", "outcome"]),
                                 st.text(max_size=8), max_size=2))
    def check(body, name, alias, request_id, version, content_type, header_length, query):
        headers = {"x-request-id": request_id, "content-type": content_type}
        if header_length is not None:
            headers["inference-header-content-length"] = header_length
        req = func.HttpRequest(method, f"http://localhost/api{path}", headers=headers,
                               params=query, route_params={"name": name, "alias": alias, "version": version,
                                                           "run_id": alias, "report_id": alias, "action": alias},
                               body=body)
        resp = call(fn, req)
        assert resp.status_code < 500, (resp.status_code, resp.get_body()[:300])
        if resp.status_code >= 400:
            err = json.loads(resp.get_body())
            if path.startswith("/v2"):  # the protocol's shape
                assert isinstance(err["error"], str) and len(err["error"]) > 10
            elif path.endswith(("/invocations", "/ping")):  # MLflow's
                assert err["error_code"] and len(err["message"]) > 10
            else:
                assert err["error"]["code"] and len(err["error"]["message"]) > 10

    check()  # the first round also warms caches and lazy imports
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"peak memory grew by {grown_mb:.0f} MB over a second round of inputs"


def test_an_oversized_body_is_413_not_parsed(served):
    req = func.HttpRequest("POST", "http://localhost/api/models/wind_power/predict", headers={}, params={},
                           route_params={"name": "wind_power"}, body=b"[" * 70000)
    resp = call(http_api.predict, req)
    assert resp.status_code == 413 and "over the limit" in json.loads(resp.get_body())["error"]["message"]


# -- through the local host's HTTP application ---------------------------------------------------
# The same inputs, plus keys, headers, query strings, paths and chunking, go through the host's
# ASGI application: routing, the key check, size limits and the request objects it builds are
# fuzzed as well, not only the functions behind them.
FUZZ_MASTER, FUZZ_FKEY = "fuzz-master-key", "fuzz-function-key"
ROUTE_TEMPLATES = ["models/{name}/predict", "models/{name}/feedback", "models", "models/{name}", "health",
                   "openapi.json", "models/{name}/monitoring/latest", "models/{name}/aliases/{alias}",
                   "v2/models/{name}", "v2/models/{name}/infer"]
keys = st.one_of(st.sampled_from([FUZZ_MASTER, FUZZ_FKEY]), st.text(max_size=12).map(lambda t: f"SECRET{t}"),
                 st.binary(max_size=12).map(lambda b: b"SECRET" + b))
path_values = st.one_of(st.sampled_from(["wind_power", "breast_cancer", "production", "x"]), st.text(max_size=15))


def _encoded(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


@st.composite
def host_requests(draw):
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    if draw(st.integers(0, 9)) == 0:
        path = draw(st.sampled_from(["/admin/functions/", "/api/", "/", "/other/"])) + draw(st.text(max_size=20))
    else:
        template = draw(st.sampled_from(ROUTE_TEMPLATES))
        path = "/api/" + template.replace("{name}", draw(path_values)).replace("{alias}", draw(path_values))
    key = draw(st.none() | keys)
    headers = [(n.encode(), draw(st.binary(max_size=20))) for n in
               draw(st.lists(st.sampled_from(["x-request-id", "content-type", "host", "x-other"]), max_size=3))]
    query = draw(st.lists(st.tuples(st.sampled_from([b"format", b"code", b"x", b"%ff", b"SECRET-name"]),
                                    st.binary(max_size=10)), max_size=2))
    if key is not None:
        if draw(st.booleans()):
            headers.append((b"x-functions-key", _encoded(key)))
        else:
            query.append((b"code", _encoded(key)))
    raw_qs = b"&".join(n + b"=" + quote_from_bytes(v).encode() for n, v in query)
    if draw(st.booleans()) and key is not None:
        raw_qs += (b"&" if raw_qs else b"") + quote_from_bytes(_encoded(key)).encode()  # a bare token
    body = draw(bodies)
    if draw(st.booleans()):
        lengths = [str(len(body)).encode(), b"abc", b"-1", b"99999999999"]
        headers.append((b"content-length", draw(st.sampled_from(lengths))))
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=2)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    return method, path, raw_qs, headers, chunks


async def asgi_call(app, method: str, path: str, raw_qs: bytes, headers: list, chunks: list[bytes]):
    """One request through an ASGI application, the body in ``chunks``; returns (status, headers, body)."""
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode("utf-8", "surrogatepass"), "query_string": raw_qs,
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 7071)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def assert_error_shape(path: str, body: dict) -> None:
    """Each protocol's error shape: v2's string, MLflow's code and message, else this API's."""
    if path.startswith("/api/v2"):
        assert isinstance(body["error"], str) and len(body["error"]) > 10
    elif "error_code" in body:  # MLflow's routes, once a function answered
        assert path.endswith(("/invocations", "/ping")) and len(body["message"]) > 10
    else:
        assert body["error"]["code"] and len(body["error"]["message"]) > 10


@pytest.fixture(scope="module")
def host_app(served):
    """The local host over the served context, triggers not started (one per process:
    a FunctionApp is indexed once); binding settings from the example file."""
    import os

    from devhost.config import HostConfig
    from devhost.host import Host

    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    added = [n for n in example
             if n.startswith(("MLOPS_QUEUE_", "MLOPS_MONITOR_SCHEDULE", "MLOPS_ROLLOUT_SCHEDULE"))
             and n not in os.environ]
    os.environ.update({n: example[n] for n in added})
    try:
        host = Host("function_app", served.storage, served.bus,
                    HostConfig(master_key=FUZZ_MASTER, function_keys=(FUZZ_FKEY,), max_body_bytes=32768),
                    queues=served.storage_queues)
    finally:
        for n in added:
            del os.environ[n]
    yield host
    host.http.executor.shutdown(wait=True)


def test_no_input_through_the_host_gets_a_5xx_or_leaks_a_key(host_app, caplog):
    host = host_app
    triggers = {f.name for f in host.index.blobs + host.index.queues + host.index.timers}
    caplog.set_level(logging.DEBUG)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=host_requests())
    def check(request):
        method, path, raw_qs, headers, chunks = request
        if path.startswith("/admin/functions/"):
            assume(path.removeprefix("/admin/functions/") not in triggers)  # do not start real runs
        status, out_headers, body = asyncio.run(asgi_call(host.http, method, path, raw_qs, headers, chunks))
        assert status < 500, (status, body[:300])
        if status >= 400:
            assert out_headers[b"content-type"].startswith(b"application/json"), out_headers
            assert_error_shape(path, json.loads(body))

    check()
    logged = "\n".join(caplog.text.splitlines())
    assert "httpTrigger" in logged  # the requests were logged...
    for secret in ("SECRET", FUZZ_MASTER, FUZZ_FKEY):
        assert secret not in logged, f"{secret!r} reached the log"  # ...without a key


def test_the_host_refuses_an_oversized_body_before_the_function_sees_it(host_app):
    chunks = [b"[" * 20000, b"[" * 20000, b"]" * 10**6]  # over the 32 KiB limit at the second chunk
    status, headers, body = asyncio.run(asgi_call(host_app.http, "POST", "/api/models/wind_power/predict", b"",
                                                  [(b"x-functions-key", FUZZ_FKEY.encode())], chunks))
    assert status == 413 and "over the host limit" in json.loads(body)["error"]["message"]
    assert headers[b"connection"] == b"close"  # the unread rest is not waited for
