"""Property-based: generated payloads, headers and route values thrown at every route of the
OpenAPI document never produce a 5xx, and every error body says what was wrong."""
from __future__ import annotations

import asyncio
import inspect
import json
import resource

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from functions import http_api, root, runs_api
from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.settings import Settings
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
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
CANCER_ROW = cancer().drop(columns="target").iloc[0].to_dict()
WIND_ROW = wind(1).drop(columns="power_kw").iloc[0].to_dict()
row_values = st.one_of(st.floats(allow_nan=False), st.integers(-10**40, 10**40), st.text(max_size=5), st.none(), st.booleans())
near_valid = st.one_of(
    st.builds(lambda rows: {"instances": rows}, st.lists(st.fixed_dictionaries(
        {k: row_values for k in WIND_ROW}, optional={"extra": row_values}), max_size=4)),
    st.builds(lambda rows: {"inputs": rows}, st.dictionaries(st.sampled_from(list(WIND_ROW) + ["zz"]), st.lists(row_values, max_size=3))),
    st.builds(lambda data: {"dataframe_split": {"columns": list(WIND_ROW), "data": data}}, st.lists(st.lists(row_values, max_size=6), max_size=3)),
    st.builds(lambda t: {"inputs": t}, st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(list(WIND_ROW)), "shape": st.lists(st.integers(-2, 3), max_size=3),
         "datatype": st.sampled_from(["FP32", "BYTES", "INT64", "X"]), "data": st.lists(row_values, max_size=3)}), max_size=6)),
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
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz")
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data), "MLOPS_MODELS_DIR": str(ROOT / "models"),
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
    infer = doc["paths"]["/v2/models/breast_cancer/infer"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert infer["properties"]["inputs"]["minItems"] == infer["properties"]["inputs"]["maxItems"] == 30
    feedback = doc["paths"]["/models/wind_power/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert feedback["properties"]["feedback"]["minItems"] == 1
    # Errors in each protocol's shape, with the statuses its codes map to.
    assert doc["paths"]["/v2/models/{name}/infer"]["post"]["responses"]["400"]["content"]["application/json"][
        "schema"]["$ref"] == "#/components/schemas/V2Error"
    assert set(doc["paths"]["/models/{name}/invocations"]["post"]["responses"]) == {"200", "400", "401", "404", "413",
                                                                                   "415", "503"}


def test_every_http_function_is_in_the_document_table():
    assert {r.name for r in http_api.api_routes()} == set(http_api.API) | set(runs_api.API)


@pytest.mark.parametrize("route", list(ROUTES), ids=[f"{m} {p}" for p, m in ROUTES])
def test_no_client_input_gets_a_5xx_and_errors_say_what_was_wrong(served, route):
    path, method = route
    fn = ROUTES[route]

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, name=names, alias=st.text(max_size=12), request_id=st.text(max_size=40),
           version=st.one_of(st.sampled_from(["1", "2", "0", "x", "²", "٣", "9" * 40]), st.text(max_size=6)),
           content_type=st.sampled_from(["application/json", "text/csv", "text/plain", "application/octet-stream"]),
           header_length=st.one_of(st.none(), st.integers(-5, 300).map(str)),
           query=st.dictionaries(st.sampled_from(["format", "code", "x", "predict_fn", "limit", "outcome"]), st.text(max_size=8), max_size=2))
    def check(body, name, alias, request_id, version, content_type, header_length, query):
        headers = {"x-request-id": request_id, "content-type": content_type}
        if header_length is not None:
            headers["inference-header-content-length"] = header_length
        req = func.HttpRequest(method, f"http://localhost/api{path}", headers=headers,
                               params=query, route_params={"name": name, "alias": alias, "version": version, "run_id": alias,
                                             "report_id": alias}, body=body)
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
