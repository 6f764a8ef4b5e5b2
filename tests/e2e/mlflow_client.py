"""MLflow's side of the invocations test; runs in MLflow's own environment (``.venv-mlflow``).

    .venv-mlflow/bin/python tests/e2e/mlflow_client.py URL KEY ROWS.json

ROWS.json is ``{"model": ..., "records": [...]}``. Every request form MLflow's scoring server
accepts for tabular data is built with MLflow's own serialisation, checked by MLflow's own
server-side parser (so each is a form MLflow accepts), sent, and the answer read with MLflow's
``PredictionsResponse``. Prints one JSON object: form -> status and predictions (or error).
"""
from __future__ import annotations

import json
import sys
from io import StringIO

import pandas as pd
import requests
from mlflow.deployments import PredictionsResponse
from mlflow.models.python_api import _serialize_input_data
from mlflow.models.utils import convert_input_example_to_serving_input
from mlflow.pyfunc.scoring_server import infer_and_parse_data, parse_csv_input
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from mlflow.utils.proto_json_utils import dump_input_data


def payloads(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    records = frame.to_dict(orient="records")
    columns = frame.to_dict(orient="list")
    return {
        "dataframe_split": (convert_input_example_to_serving_input(frame), "application/json"),
        "dataframe_records": (json.dumps({"dataframe_records": records}), "application/json"),
        "instances_records": (dump_input_data(records, inputs_key="instances"), "application/json"),
        "inputs_records": (dump_input_data(records, inputs_key="inputs"), "application/json"),
        "instances_columns": (json.dumps({"instances": columns}), "application/json"),
        "inputs_columns": (json.dumps({"inputs": columns}), "application/json"),
        "csv": (_serialize_input_data(frame, "csv"), "text/csv"),  # as `mlflow models predict --content-type csv`
        "proba": (dump_input_data(frame, params={"predict_fn": "predict_proba"}), "application/json"),
    }


def main() -> None:
    url, key, rows_path = sys.argv[1:4]
    with open(rows_path) as f:
        given = json.load(f)
    frame = pd.DataFrame(given["records"])
    base = f"{url}/api/models/{given['model']}"
    out: dict = {}
    for form, (body, content_type) in payloads(frame).items():
        # MLflow's own server would take it: its parser reads the same body.
        if content_type == "text/csv":
            assert len(parse_csv_input(StringIO(body))) == len(frame)
        else:
            parsed = json.loads(body)
            parsed.pop("params", None)
            infer_and_parse_data(parsed)
        resp = requests.post(f"{base}/invocations", data=body.encode(),
                             headers={"Content-Type": content_type, "x-functions-key": key}, timeout=30)
        if resp.status_code != 200:
            out[form] = {"status": resp.status_code, "error": resp.json()}
            continue
        parsed = PredictionsResponse.from_json(resp.text)
        out[form] = {"status": 200, "predictions": parsed.get_predictions(predictions_format="ndarray").tolist(),
                     "frame_shape": list(parsed.get_predictions().shape)}
    # MLflow's scoring-server client, pointed at the model's routes; the key goes in as `code`
    # through the client's own transport (requests), the only thing it cannot be told.
    client = ScoringServerClient("127.0.0.1", url.rsplit(":", 1)[1] + f"/api/models/{given['model']}")
    session_get, session_post = requests.get, requests.post
    requests.get = lambda url, **kw: session_get(url, params={"code": key}, **kw)
    requests.post = lambda url, **kw: session_post(url, params={"code": key}, **kw)
    try:
        client.wait_server_ready(timeout=10)
        out["client_invoke"] = {"status": 200, "predictions": client.invoke(frame).get_predictions(
            predictions_format="ndarray").tolist()}
    finally:
        requests.get, requests.post = session_get, session_post
    print(json.dumps(out))


if __name__ == "__main__":
    main()
