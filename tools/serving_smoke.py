"""Answer a prediction, then call every route of the serving role, in the serving package's environment.

    python -S tools/serving_smoke.py SITE_PACKAGES [--predict-only]

Run by a bare interpreter (``-S``: no site-packages of its own) with ``SITE_PACKAGES`` (the
package's ``.python_packages/lib/site-packages``) and the app's folder on ``sys.path``, as
the Functions worker runs the app, and with ``MLOPS_APP_ROLE=serving`` and a data folder
holding registered models. Each function is called as the worker calls it, with the
library's own ``HttpRequest``. Prints one JSON object: the seconds from interpreter start to
the first answered prediction, each route's status, and which of the training stack's
modules were imported (none may be: they are not installed either).
"""
from __future__ import annotations

import sys
import time

START = time.perf_counter()  # as close to the new process's start as Python code gets

import os  # noqa: E402

APP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [sys.argv[1], APP]

import asyncio  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402

TRAINING_STACK = ("sklearn", "skl2onnx", "pandas", "scipy")
ROW = {"wind_speed": 9.5, "wind_direction": 230, "air_temperature": 15, "air_density": 1.22, "turbine_id": "T03"}


def main() -> None:
    import azure.functions as func

    import function_app

    functions = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}

    def call(fn: str, method: str = "GET", body: object = None, params: dict | None = None,
             **route) -> func.HttpResponse:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = func.HttpRequest(method, f"http://localhost/api/{fn}", headers={"content-type": "application/json"},
                               params=params or {}, route_params=route, body=data)
        out = functions[fn](req)
        return asyncio.run(out) if inspect.isawaitable(out) else out

    first = call("predict", "POST", {"instances": [ROW]}, name="wind_power")
    answered = time.perf_counter() - START
    result = {"first_prediction_s": answered, "predict_status": first.status_code,
              "predict_body": json.loads(first.get_body())}
    if "--predict-only" not in sys.argv:
        rid = result["predict_body"].get("request_id", "")
        runs = json.loads(call("list_runs", name="wind_power").get_body())
        run_id = (runs.get("runs") or [{}])[0].get("run_id", "none")
        reports = json.loads(call("monitoring_reports", name="wind_power").get_body())
        report_id = (reports.get("reports") or [{}])[0].get("id", "none")
        statuses = {}
        for label, response in {
            "predict_breast_cancer": lambda: call("predict", "POST", {"instances": [{}]}, name="breast_cancer"),
            "infer_v2": lambda: call("infer_v2", "POST", {"inputs": [
                {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP32", "data": [v]}
                for k, v in ROW.items()]}, name="wind_power"),
            "infer_v2_version": lambda: call("infer_v2_version", "POST", {"inputs": [
                {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP32", "data": [v]}
                for k, v in ROW.items()]}, name="wind_power", version="1"),
            "monitoring_report": lambda: call("monitoring_report", params={"format": "html"}, name="wind_power",
                                              report_id=report_id),
            "invocations": lambda: call("invocations", "POST", {"dataframe_records": [ROW]}, name="wind_power"),
            # matched in the inference log's Parquet, stored as Parquet; again: found among the stored
            "feedback": lambda: call("feedback", "POST", {"feedback": [{"request_id": rid, "value": 1000.0}]},
                                     name="wind_power"),
            "feedback_again": lambda: call("feedback", "POST", {"feedback": [{"request_id": rid, "value": 1000.0}]},
                                           name="wind_power"),
            "set_alias": lambda: call("set_alias", "PUT", {"version": 1, "reason": "smoke"}, name="wind_power",
                                      alias="staging"),
            "monitoring_latest_html": lambda: call("monitoring_latest", params={"format": "html"}, name="wind_power"),
            "monitoring_reports": lambda: call("monitoring_reports", name="wind_power"),
            "get_run": lambda: call("get_run", name="wind_power", run_id=run_id),
            "get_version": lambda: call("get_version", name="wind_power", version="1"),
            # no rollout in the smoke's data: 404 naming the model; an action on none, 404 too
            "get_rollout": lambda: call("get_rollout", name="wind_power"),
            "rollout_action": lambda: call("rollout_action", "POST", {"reason": "smoke"}, name="wind_power",
                                           action="pause"),
            **{n: (lambda n=n: call(n, name="wind_power", version="1")) for n in (
                "v2_server_metadata", "v2_server_live", "v2_server_ready", "v2_model_ready", "v2_version_ready",
                "metadata_v2", "v2_version_metadata", "ping", "list_models", "get_model", "monitoring_plotly",
                "openapi", "health", "list_runs", "console_overview", "console")},
        }.items():
            r = response()
            statuses[label] = r.status_code
            if label.startswith("feedback"):
                result[label + "_body"] = json.loads(r.get_body())
            if r.status_code >= 500:
                statuses[label + "_body"] = r.get_body()[:500].decode(errors="replace")
        result["statuses"] = statuses
        result["unrouted"] = sorted(set(functions) - {k.removesuffix("_html") for k in statuses} - {"predict"})
    result["training_stack_imported"] = [m for m in TRAINING_STACK if m in sys.modules]
    result["heavy_imported"] = [m for m in ("numpy", "onnx", "onnxruntime", "pyarrow", "plotly") if m in sys.modules]
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # the inference log's thread would flush at exit; the answer is already given


if __name__ == "__main__":
    main()
