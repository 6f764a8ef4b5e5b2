"""The client's retry and error rules, against a real HTTP server on a loopback socket, and
``mlops init``'s refusals, which are the pipeline gate's own."""
from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from mlops import v2
from mlops.client import ApiError, MlopsClient, Unreachable
from mlops.config import resolve


class _Server:
    """Answers each request with the next of ``replies``: (status, headers, body)."""

    def __init__(self, replies: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.replies = list(replies)
        self.seen: list[dict[str, str]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                outer.seen.append(dict(self.headers))
                outer.paths.append(self.path)
                status, headers, body = outer.replies.pop(0)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_UNAVAILABLE = (503, {"retry-after": "1", "content-type": "application/json"},
                json.dumps({"error": {"code": "NO_PRODUCTION_VERSION", "message": "model 'wine' has no production "
                                                                                   "version"}}).encode())
_MODELS = (200, {"content-type": "application/json"}, b'{"models": [{"name": "wine", "production": 1}]}')


def test_a_503_with_retry_after_is_retried_after_that_long_and_the_key_goes_in_a_header():
    server = _Server([_UNAVAILABLE, _MODELS])
    waits: list[float] = []
    try:
        with MlopsClient(server.url, key="k1", retry_seconds=10, sleep=waits.append) as client:
            assert client.models() == [{"name": "wine", "production": 1}]
    finally:
        server.close()
    assert waits == [1.0]
    assert all(s.get("x-functions-key") == "k1" for s in server.seen)


def test_a_503_past_the_retry_budget_or_without_retry_after_raises_the_apis_code_and_message():
    server = _Server([_UNAVAILABLE, (503, {}, b'{"error": "storage away"}')])
    try:
        with MlopsClient(server.url, retry_seconds=0.5, sleep=lambda s: None) as client:
            with pytest.raises(ApiError) as first:
                client.models()  # Retry-After 1 s does not fit a budget of 0.5 s
            with pytest.raises(ApiError) as second:
                client.models()  # no Retry-After: nothing says waiting helps
    finally:
        server.close()
    assert (first.value.status, first.value.code) == (503, "NO_PRODUCTION_VERSION")
    assert "no production version" in first.value.message and first.value.retry_after == 1.0
    assert (second.value.status, second.value.message) == (503, "storage away")


def test_no_server_is_unreachable_with_one_line():
    server = _Server([])
    url = server.url
    server.close()
    with MlopsClient(url, timeout=2) as client, pytest.raises(Unreachable) as caught:
        client.models()
    assert caught.value.code == "UNREACHABLE" and "\n" not in caught.value.message


def test_binary_v2_requests_carry_numbers_as_float32_and_text_with_its_nulls_as_json():
    body, n = v2.encode_request({"x": np.array([1.5, np.nan]), "c": ["a", None], "d": ["p", "q"]},
                                {"x": "FP32", "c": "BYTES", "d": "BYTES"})
    head = json.loads(body[:n])
    by_name = {t["name"]: t for t in head["inputs"]}
    assert by_name["c"]["data"] == ["a", None] and "parameters" not in by_name["c"]
    assert by_name["x"]["parameters"]["binary_data_size"] == 8 and by_name["d"]["parameters"]["binary_data_size"] == 10
    tail = body[n:]
    np.testing.assert_array_equal(np.frombuffer(tail[:8], "<f4"), np.array([1.5, np.nan], dtype=np.float32))
    assert tail[8:] == b"\x01\x00\x00\x00p\x01\x00\x00\x00q"


def test_flags_win_over_the_environment_which_wins_over_the_profile(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('default = "cloud"\n[profiles.cloud]\nurl = "https://example.invalid"\nkey_env = "CLOUD_KEY"\n')
    monkeypatch.setenv("CLOUD_KEY", "from-profile")
    env = {"MLOPS_CONFIG": str(config)}
    target = resolve({}, env)
    assert (target.url, target.key, target.master_key, target.profile) == ("https://example.invalid", "from-profile",
                                                                           None, "cloud")
    assert resolve({}, {**env, "MLOPS_KEY": "from-env"}).key == "from-env"
    assert resolve({"key": "from-flag"}, {**env, "MLOPS_KEY": "from-env"}).key == "from-flag"
    local = resolve({}, {"MLOPS_CONFIG": str(tmp_path / "none.toml")})
    assert (local.url, local.key) == ("http://localhost:7071", "local-function-key")


def test_a_local_host_on_another_port_gets_the_local_keys(tmp_path):
    # `make run PORT=7072` then `mlops --url http://localhost:7072 ...` was refused 401 ("list_runs
    # needs a function key"): the local keys were sent only to port 7071.
    env = {"MLOPS_CONFIG": str(tmp_path / "none.toml")}
    for url in ("http://localhost:7072", "http://127.0.0.1:7190/", "http://[::1]:7072"):
        target = resolve({"url": url}, env)
        assert (target.url, target.key, target.master_key) == (url, "local-function-key", "local-master-key")
    for url in ("https://func.example.invalid", "http://localhost.example.invalid:7071", "https://localhost:7072"):
        assert resolve({"url": url}, env).key is None  # never sent elsewhere


def test_init_leaves_out_what_the_gate_refuses_with_the_gates_reason(tmp_path):
    from mlops.init import build_spec
    from shared.core.spec import parse_spec

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "size": rng.normal(10, 2, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "customer_id": [f"c{i}" for i in range(n)],  # 400 distinct: over max_categories
        "seen_at": [dt.datetime(2026, 1, 1) + dt.timedelta(hours=i) for i in range(n)],
        "site": ["berlin"] * n,
        "time": rng.normal(0, 1, n),  # a name the inference log writes for itself
    })
    frame["price"] = frame["size"] * 3 + (frame["colour"] == "red") * 5 + rng.normal(0, 1, n)
    path = tmp_path / "prices.parquet"
    frame.to_parquet(path)
    result = build_spec(path, "price", models_dir=tmp_path)
    spec = parse_spec(result.text, "models/prices.toml", expected_name="prices")
    assert (spec.task, spec.numeric, spec.categorical) == ("regression", ("size",), ("colour",))
    why = {d.column: d.why for d in result.decisions if d.role == "refused"}
    assert "holds datetime values" in why["seen_at"]
    assert "400 distinct values, over the spec's bound of 100" in why["customer_id"]
    assert "constant" in why["site"]
    assert "a column the inference log writes for itself" in why["time"]
    assert spec.metric == "rmse" and 0 < spec.floor < frame["price"].std()


def test_a_name_or_id_stays_one_path_segment_and_never_reaches_another_route():
    """Seen through the host: `mlops report wine --id ../../etc` asked the host for
    /api/models/wine/etc and `mlops show ../x` for /api/x ('no function serves /api/x'): the
    client put names and ids into paths as they came, and '..' walked to other routes (another
    model's report, from `report wine --id ../../iris/monitoring/reports/<id>`)."""
    ok = (200, {"content-type": "application/json"}, b"{}")
    server = _Server([ok] * 4)
    try:
        with MlopsClient(server.url, key="k") as c:
            c.monitoring_report("wine", "../../iris/monitoring/reports/x")
            c.model("../x")
            c.run("wine", "a/b")
            c.rollout("wine?x=1")
    finally:
        server.close()
    assert server.paths == ["/api/models/wine/monitoring/reports/..%2F..%2Firis%2Fmonitoring%2Freports%2Fx",
                            "/api/models/..%2Fx", "/api/models/wine/runs/a%2Fb", "/api/models/wine%3Fx%3D1/rollout"]
