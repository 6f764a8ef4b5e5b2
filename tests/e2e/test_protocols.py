"""Standard clients against the local host, unchanged: tritonclient's HTTP client (Open Inference
Protocol v2, binary tensors by default), MLflow's own request serialisation and response parsing
(``/invocations``), and schemathesis on the OpenAPI document the host serves."""
from __future__ import annotations

import json
import subprocess

import httpx
import numpy as np
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.settings import Settings
from shared.registry.store import PRODUCTION
from shared.serving.graph import new_session
from tests.conftest import ROOT, to_csv, to_parquet
from tests.e2e.hostproc import FKEY, HostProcess
from tests.helpers import drain, drop

pytestmark = pytest.mark.e2e

CANCER = cancer()
CANCER_X = CANCER.drop(columns="target")
WIND_X = wind(200, seed=7).drop(columns="power_kw")


@pytest.fixture(scope="module")
def served(tmp_path_factory, example_models):
    """A host over a registry with wind_power v1 and breast_cancer v1 and v2 (production on 1)."""
    data = tmp_path_factory.mktemp("protocols") / "data"
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(data),
                                                   "MLOPS_MODELS_DIR": str(example_models)}))
    drop(ctx, "wind_power", "w.parquet", to_parquet(wind(2000, seed=1)))
    drop(ctx, "breast_cancer", "a.csv", to_csv(CANCER))
    drain(ctx)
    drop(ctx, "breast_cancer", "b.csv", to_csv(CANCER.iloc[::-1]))
    drain(ctx)
    assert ctx.registry.versions("breast_cancer") == [1, 2]
    current = ctx.registry.alias("breast_cancer")
    if current.version != 1:
        ctx.registry.move_alias("breast_cancer", PRODUCTION, 1, expected=current, event="rollback", reason="t",
                                actor="t")
    # 100 rows per request at most: the document's maxItems follow (so a schema-valid body stays
    # under MLOPS_MAX_REQUEST_BYTES), and schemathesis' boundary cases stay small.
    host = HostProcess(data, env={"MLOPS_INFERENCE_LOG_SAMPLE": "0", "MLOPS_MAX_BATCH_ROWS": "100"}).start()
    yield host, ctx
    host.stop()
    ctx.close()


def expected(ctx, model: str, version: int, frame) -> list[np.ndarray]:
    """What the registered graph of ``version`` answers for ``frame``, run here directly."""
    manifest = ctx.registry.manifest(model, version)
    session = new_session(ctx.registry.model_bytes(model, version))
    feeds = {c["name"]: frame[c["name"]].to_numpy(np.float32 if c["type"] == "float" else object).reshape(-1, 1)
             for c in manifest["input_schema"]}
    return session.run(None, feeds)


# -- tritonclient ------------------------------------------------------------------------------
def triton(host):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=f"127.0.0.1:{host.port}/api")


def triton_inputs(frame, schema):
    import tritonclient.http as httpclient

    inputs = []
    for c in schema:
        name = c["name"]
        values = frame[[name]].to_numpy(np.float32 if c["type"] == "float" else np.object_)
        t = httpclient.InferInput(name, list(values.shape), "FP32" if c["type"] == "float" else "BYTES")
        t.set_data_from_numpy(values)  # binary_data=True: tritonclient's default
        inputs.append(t)
    return inputs


def test_tritonclient_health_and_metadata(served):
    host, ctx = served
    client = triton(host)
    headers = {"x-functions-key": FKEY}
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] and "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("breast_cancer", headers=headers)
    assert client.is_model_ready("breast_cancer", model_version="2", headers=headers)
    assert not client.is_model_ready("breast_cancer", model_version="9", headers=headers)
    assert not client.is_model_ready("solar", headers=headers)
    assert not client.is_model_ready("breast_cancer")  # no key
    model = client.get_model_metadata("breast_cancer", headers=headers)
    assert model["versions"] == ["1", "2"] and len(model["inputs"]) == 30
    assert [o["name"] for o in model["outputs"]] == ["label", "probabilities"]
    assert client.get_model_metadata("breast_cancer", model_version="2", headers=headers)["versions"] == ["2"]


@pytest.mark.parametrize("model,version", [("wind_power", ""), ("breast_cancer", ""), ("breast_cancer", "2")])
def test_tritonclient_infer_with_its_defaults_answers_what_the_version_answers(served, model, version):
    host, ctx = served
    client = triton(host)
    frame = (WIND_X if model == "wind_power" else CANCER_X).head(50)
    v = int(version or 1)
    schema = ctx.registry.manifest(model, v)["input_schema"]
    result = client.infer(model, triton_inputs(frame, schema), model_version=version, headers={"x-functions-key": FKEY})
    want = expected(ctx, model, v, frame)
    assert result.get_response()["model_version"] == str(v)
    if model == "wind_power":
        got = result.as_numpy("predictions")
        assert got.dtype == np.float32 and np.array_equal(got, want[0].ravel())
    else:
        assert np.array_equal(result.as_numpy("label"), want[0].ravel())
        assert np.array_equal(result.as_numpy("probabilities"), want[1])
    # JSON tensors both ways give the same answers.
    import tritonclient.http as httpclient

    inputs = triton_inputs(frame, schema)
    for t in inputs:
        t.set_data_from_numpy(_numpy(frame, t), binary_data=False)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in
               (("predictions",) if model == "wind_power" else ("label", "probabilities"))]
    plain = client.infer(model, inputs, model_version=version, outputs=outputs, headers={"x-functions-key": FKEY})
    first = outputs[0].name()
    assert np.array_equal(plain.as_numpy(first), result.as_numpy(first))


def _numpy(frame, t):
    name = t.name()
    return frame[[name]].to_numpy(np.float32 if t.datatype() == "FP32" else np.object_)


def test_tritonclient_errors_are_the_protocols_shape(served):
    from tritonclient.utils import InferenceServerException

    host, ctx = served
    client = triton(host)
    frame = CANCER_X.head(2)
    schema = ctx.registry.manifest("breast_cancer", 1)["input_schema"]
    with pytest.raises(InferenceServerException) as err:
        client.infer("breast_cancer", triton_inputs(frame, schema)[:-1], headers={"x-functions-key": FKEY})
    assert err.value.status() == "400" and "missing input tensor" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("breast_cancer", triton_inputs(frame, schema), model_version="7",
                     headers={"x-functions-key": FKEY})
    assert err.value.status() == "404" and "version=7" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.infer("breast_cancer", triton_inputs(frame, schema))  # no key: the host's refusal, same shape
    assert err.value.status() == "401" and "function key" in err.value.message()
    body = httpx.post(f"{host.url}/api/v2/models/breast_cancer/infer", content=b"{", headers={"x-functions-key": FKEY})
    assert body.status_code == 400 and isinstance(body.json()["error"], str)


def test_versions_are_loaded_on_demand_and_evicted_by_a_bounded_cache(served):
    from dataclasses import replace

    from shared.serving.runtime import ModelServer

    host, ctx = served
    server = ModelServer(ctx.registry, ctx.specs, replace(ctx.settings), version_cache_size=1)
    production = server.get("breast_cancer")
    assert server.get_version("breast_cancer", 1) is production  # production's session: no second load
    v2 = server.get_version("breast_cancer", 2)
    assert v2.version == 2 and server.get_version("breast_cancer", 2) is v2 and server.version_loads == 1
    server.get("wind_power")
    server.get_version("wind_power", 1)  # production of its own model: not cached
    assert server.cached_versions() == [("breast_cancer", 2)]
    server.close()
    small = ModelServer(ctx.registry, ctx.specs, ctx.settings, version_cache_size=1)
    small.get_version("breast_cancer", 2)
    small.get_version("breast_cancer", 1)  # production not loaded in this server yet: cached, evicting 2
    assert small.cached_versions() == [("breast_cancer", 1)] and small.version_loads == 2
    small.close()


def test_a_tampered_version_is_refused_on_demand(served, tmp_path):
    from shared.core.errors import IntegrityError
    from shared.ports.storage.local import LocalStorage
    from shared.registry.store import Registry
    from shared.serving.runtime import ModelServer

    host, ctx = served
    storage = LocalStorage(tmp_path / "blobs")
    for blob in ctx.storage.list("registry", "breast_cancer/versions/2/"):
        storage.put("registry", blob.name, ctx.storage.get("registry", blob.name).data)
    storage.put("registry", "breast_cancer/versions/2/model.onnx", b"evil")
    alerts = []
    server = ModelServer(Registry(storage), ctx.specs, ctx.settings, alert=lambda *a: alerts.append(a))
    with pytest.raises(IntegrityError, match="SHA-256"):
        server.get_version("breast_cancer", 2)
    assert alerts and alerts[0][1] == "integrity" and server.cached_versions() == []
    server.close()


# -- MLflow ------------------------------------------------------------------------------------
MLFLOW_PY = ROOT / ".venv-mlflow" / "bin" / "python"


def mlflow_client(host, model: str, frame, tmp_path) -> dict:
    if not MLFLOW_PY.exists():
        pytest.fail("MLflow's test environment is missing: run `make test` (it creates .venv-mlflow)")
    rows = tmp_path / f"{model}.json"
    rows.write_text(json.dumps({"model": model, "records": frame.to_dict(orient="records")}))
    done = subprocess.run([str(MLFLOW_PY), str(ROOT / "tests" / "e2e" / "mlflow_client.py"), host.url, FKEY, str(rows)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["breast_cancer", "wind_power"])
def test_mlflow_serialises_every_form_and_parses_the_answer_as_its_sklearn_flavour_gives(served, model, tmp_path):
    host, ctx = served
    frame = (CANCER_X if model == "breast_cancer" else WIND_X).head(20)
    got = mlflow_client(host, model, frame, tmp_path)
    want = expected(ctx, model, 1, frame)
    forms = ["dataframe_split", "dataframe_records", "instances_records", "inputs_records", "instances_columns",
             "inputs_columns", "csv", "client_invoke"]
    for form in forms:
        assert got[form]["status"] == 200, (form, got[form])
        if model == "breast_cancer":  # labels by default, as sklearn's predict
            assert got[form]["predictions"] == want[0].ravel().tolist(), form
        else:
            assert np.array_equal(np.asarray(got[form]["predictions"], np.float32), want[0].ravel()), form
    if model == "breast_cancer":  # per-class probabilities when asked, as predict_proba
        assert np.array_equal(np.asarray(got["proba"]["predictions"], np.float32), want[1])
        assert got["proba"]["frame_shape"] == [20, 2]
    else:  # a regressor has no predict_proba: MLflow's error shape
        assert got["proba"]["status"] == 400 and got["proba"]["error"]["error_code"] == "BAD_REQUEST"


def test_mlflow_ping_and_errors(served):
    host, ctx = served
    client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10)
    ping = client.get("/api/models/breast_cancer/ping")
    assert ping.status_code == 200 and ping.headers["x-model-version"] == "1"
    assert client.get("/api/models/solar/ping").json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    refused = client.post("/api/models/breast_cancer/invocations", content=b"a=1",
                          headers={"content-type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 415 and "text/csv" in refused.json()["message"]
    bad = client.post("/api/models/wind_power/invocations", content=b"wind_speed\n3\n",
                      headers={"content-type": "text/csv"})
    assert bad.status_code == 400 and "missing field" in bad.json()["message"]
    # Parquet, as MLflow's scoring server also reads it (pandas writes it; MLflow has no writer).
    import io

    frame = WIND_X.head(5).set_axis([10, 3, 7, 1, 0])  # a non-range index travels as a column of its own
    buf = io.BytesIO()
    frame.to_parquet(buf)
    parquet = client.post("/api/models/wind_power/invocations", content=buf.getvalue(),
                          headers={"content-type": "application/vnd.apache.parquet"})
    assert parquet.status_code == 200, parquet.text
    assert np.array_equal(np.asarray(parquet.json()["predictions"], np.float32),
                          expected(ctx, "wind_power", 1, frame)[0].ravel())
    junk = client.post("/api/models/wind_power/invocations", content=b"PAR1 no",
                       headers={"content-type": "application/vnd.apache.parquet"})
    assert junk.status_code == 400 and "not a Parquet table" in junk.json()["message"]


def test_invocations_ignores_columns_the_model_does_not_use_and_predict_refuses_them(served):
    """As MLflow's scoring server: columns the signature does not name are ignored, with a warning
    (here a header naming them); this API's own /predict refuses them, naming the first."""
    import io

    host, ctx = served
    client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10)
    with_target = CANCER.head(8)  # the model's 30 columns and the label it was trained on
    want = expected(ctx, "breast_cancer", 1, CANCER_X.head(8))[0].ravel().tolist()
    split = json.loads(with_target.to_json(orient="split"))
    parquet = io.BytesIO()
    with_target.to_parquet(parquet, index=False)
    bodies = {
        "dataframe_split": {"json": {"dataframe_split": split}},
        "dataframe_records": {"json": {"dataframe_records": with_target.to_dict(orient="records")}},
        "inputs_columns": {"json": {"inputs": with_target.to_dict(orient="list")}},
        "csv": {"content": with_target.to_csv(index=False).encode(), "headers": {"content-type": "text/csv"}},
        "parquet": {"content": parquet.getvalue(), "headers": {"content-type": "application/vnd.apache.parquet"}},
    }
    for form, kwargs in bodies.items():
        resp = client.post("/api/models/breast_cancer/invocations", **kwargs)
        assert resp.status_code == 200, (form, resp.text)
        assert resp.json() == {"predictions": want}, form
        assert json.loads(resp.headers["x-ignored-columns"]) == ["target"], form
    plain = client.post("/api/models/breast_cancer/invocations", json={"dataframe_split": json.loads(
        CANCER_X.head(8).to_json(orient="split"))})
    assert plain.status_code == 200 and "x-ignored-columns" not in plain.headers
    refused = client.post("/api/models/breast_cancer/predict",
                          json={"instances": with_target.to_dict(orient="records")})
    assert refused.status_code == 400 and refused.json()["error"]["message"] == "row 0: unexpected field 'target'"
    # A column named twice is refused, naming it, on both routes (v2 refuses an input given twice).
    twice = {"columns": [*split["columns"], "mean_radius"], "data": [[*row, 1.0] for row in split["data"]]}
    for path, message_of in (("predict", lambda r: r.json()["error"]["message"]),
                             ("invocations", lambda r: r.json()["message"])):
        resp = client.post(f"/api/models/breast_cancer/{path}", json={"dataframe_split": twice})
        assert resp.status_code == 400 and "'mean_radius' twice" in message_of(resp), (path, resp.text)
    csv_twice = client.post("/api/models/breast_cancer/invocations", content=b"mean_radius,mean_radius\n1,2\n",
                            headers={"content-type": "text/csv"})
    assert csv_twice.status_code == 400 and "'mean_radius' twice" in csv_twice.json()["message"]


def test_a_key_given_twice_is_refused_on_every_json_route_naming_it(served):
    """orjson keeps the last of a repeated key; the host refuses such a body instead, on every
    JSON route, in each protocol's envelope, and nothing it asked for happens."""
    from tests.e2e.hostproc import FEEDBACK_KEY, MASTER

    host, ctx = served
    client = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=10)
    row = WIND_X.head(1).to_dict(orient="records")[0]
    one = json.dumps(row)
    twice = one[:-1] + ', "wind_speed": 99.0}'  # the row names wind_speed a second time
    assert client.post("/api/models/wind_power/predict", content=f'{{"instances": [{one}]}}').status_code == 200
    tensors = ", ".join(f'{{"name": "{k}", "shape": [1], "datatype": "{"BYTES" if isinstance(v, str) else "FP32"}", '
                        f'"data": [{json.dumps(v)}], "data": [{json.dumps(v)}]}}' for k, v in row.items())
    for path, body, message_of, said in (
        ("/api/models/wind_power/predict", f'{{"instances": [{one}, {twice}]}}',
         lambda r: r.json()["error"]["message"], "key 'wind_speed' is given twice in 'instances[1]'"),
        ("/api/models/wind_power/invocations", f'{{"dataframe_records": [{one}, {twice}]}}',
         lambda r: r.json()["message"], "key 'wind_speed' is given twice in 'dataframe_records[1]'"),
        ("/api/v2/models/wind_power/infer", f'{{"inputs": [{tensors}]}}',
         lambda r: r.json()["error"], "key 'data' is given twice in 'inputs[0]'"),
    ):
        resp = client.post(path, content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and message_of(resp).startswith(said), (path, resp.text)
    native = client.post("/api/models/wind_power/predict", content=f'{{"instances": [{twice}]}}').json()["error"]
    assert native["code"] == "INVALID_REQUEST" and native["details"] == {"field": "wind_speed", "at": "instances[0]"}
    invocations = client.post("/api/models/wind_power/invocations", content=f'{{"inputs": [{twice}]}}',
                              headers={"content-type": "application/json"})
    assert invocations.json()["error_code"] == "BAD_REQUEST"
    feedback = client.post("/api/models/wind_power/feedback", headers={"x-functions-key": FEEDBACK_KEY},
                           content=b'{"feedback": [{"request_id": "a", "value": 1.0, "value": 2.0}]}')
    assert feedback.status_code == 400
    assert feedback.json()["error"]["details"] == {"field": "value", "at": "feedback[0]"}
    # The operator routes: the alias does not move; the rollout route refuses before anything else.
    before = ctx.registry.alias("wind_power", PRODUCTION)
    alias = client.put("/api/models/wind_power/aliases/production", headers={"x-functions-key": MASTER},
                       content=b'{"version": 1, "reason": "a", "reason": "b"}')
    assert alias.status_code == 400 and "key 'reason' is given twice" in alias.json()["error"]["message"]
    assert ctx.registry.alias("wind_power", PRODUCTION) == before
    pause = client.post("/api/models/wind_power/rollout/pause", headers={"x-functions-key": MASTER},
                        content=b'{"reason": "freeze", "actor": "me", "actor": "you"}')
    assert pause.status_code == 400 and "key 'actor' is given twice" in pause.json()["error"]["message"]


# -- schemathesis: last in this module, as it moves aliases and posts feedback -------------------
def test_schemathesis_finds_no_failure_with_every_check(served):
    """A bounded run (tests/e2e/schemathesis.toml says what is configured and why) on the
    document the host serves: examples, coverage and fuzzing phases, every check, both modes."""
    import os
    import sys
    from pathlib import Path

    from tests.e2e.hostproc import MASTER

    host, ctx = served
    exe = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [str(exe), "--config-file", str(ROOT / "tests" / "e2e" / "schemathesis.toml"), "run",
         f"{host.url}/api/openapi.json", "--url", f"{host.url}/api", "-H", f"x-functions-key: {MASTER}",
         "--no-color"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    summary = done.stdout[-4000:]
    assert done.returncode == 0 and " passed" in summary and "failures" not in summary.lower(), summary
