"""Every run visible with its lineage; any column name pandas reads works end to end.

In-process on the embedded backends: real fits, real ONNX sessions, real storage files.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import json

import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.context import Context
from shared.core.errors import NoProductionVersion, TransientError, is_transient
from shared.core.settings import Settings
from shared.core.spec import SpecCatalog
from shared.lineage import runs_of, version_lineage
from shared.pipeline import stages as P
from shared.registry import quarantine
from shared.registry.store import PRODUCTION
from shared.serving.inprocess import predict
from tests.conftest import copy_example_specs, example_spec_text, to_csv, to_parquet
from tests.helpers import drain, drop

SPEC_TAIL = """
[training]
holdout_fraction = 0.25
seed = 42
min_rows = 50

[parity]
rtol = 1e-4
atol = 1e-4
"""


def _spec(name: str, task: str, target: str, numeric: list[str], categorical: list[str], estimator: str,
          params: str, metric: str, floor: float) -> str:
    return f"""
[model]
name = "{name}"
task = "{task}"
target = "{target}"

[features]
numeric = {json.dumps(numeric, ensure_ascii=False)}
categorical = {json.dumps(categorical, ensure_ascii=False)}

[estimator]
class = "{estimator}"
params = {params}

[promotion]
metric = "{metric}"
margin = 0.01
floor = {floor}
""" + SPEC_TAIL


@pytest.fixture
def wine_frame() -> pd.DataFrame:
    return load_wine(as_frame=True).frame


@pytest.fixture
def specs_ctx(ctx, tmp_path, wine_frame):
    """The context with the example specs plus wine (its real column names) and one of odd names."""
    folder = tmp_path / "specs"
    folder.mkdir()
    copy_example_specs(folder)
    features = [c for c in wine_frame.columns if c != "target"]
    (folder / "wine.toml").write_text(_spec("wine", "multiclass", "target", features, [], "RandomForestClassifier",
                                            "{ n_estimators = 30, random_state = 0, n_jobs = 1 }", "accuracy", 0.8))
    (folder / "odd.toml").write_text(_spec("odd", "regression", "y", ODD_NUMERIC, ["cat/x", "cat x"], "Ridge",
                                           "{ alpha = 1.0 }", "rmse", 10.0), encoding="utf-8")
    ctx.specs = SpecCatalog(folder)
    return ctx


# Slashes, spaces, dots, unicode, a leading digit, and names that collide once made safe.
ODD_NUMERIC = ["a/b", "a_b", "a.b", "1st col", "é ü", "x"]


def _odd_frame(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(ODD_NUMERIC))), columns=ODD_NUMERIC)
    frame["cat/x"] = rng.choice(["u", "v", "w"], rows)
    frame["cat x"] = rng.choice(["p", "q"], rows)
    frame["y"] = (3 * frame["a/b"] - 2 * frame["a_b"] + frame["é ü"] + (frame["cat/x"] == "u") * 4
                  + rng.normal(0, 0.1, rows))
    return frame


def test_wine_with_its_real_column_names_is_trained_converted_and_served(specs_ctx, wine_frame):
    ctx = specs_ctx
    assert "od280/od315_of_diluted_wines" in wine_frame.columns
    assert drop(ctx, "wine", "wine.csv", to_csv(wine_frame)).ok
    results = drain(ctx)
    assert all(r.ok for r in results), [r.detail for r in results]
    assert ctx.registry.alias("wine", PRODUCTION).version == 1
    schema = ctx.registry.manifest("wine", 1)["input_schema"]
    # The API keeps the user's names; the graph's inputs are safe names mapped from them.
    assert [c["name"] for c in schema] == [c for c in wine_frame.columns if c != "target"]
    graph = onnx.load_from_string(ctx.registry.model_bytes("wine", 1))
    assert [i.name for i in graph.graph.input] == [c["input"] for c in schema]
    assert all("/" not in c["input"] for c in schema)
    rows = wine_frame.drop(columns="target").iloc[[0, 70, 140]].to_dict("records")
    out = predict(ctx.server, "wine", {"instances": rows})
    assert [p["label"] for p in out["predictions"]] == wine_frame["target"].iloc[[0, 70, 140]].tolist()
    # A request missing the slashed column is refused naming it as the user wrote it.
    del rows[0]["od280/od315_of_diluted_wines"]
    with pytest.raises(Exception, match="od280/od315_of_diluted_wines"):
        predict(ctx.server, "wine", {"instances": rows})


def test_names_that_collide_once_made_safe_keep_their_own_columns(specs_ctx):
    ctx = specs_ctx
    frame = _odd_frame()
    assert drop(ctx, "odd", "odd.parquet", to_parquet(frame)).ok
    assert all(r.ok for r in drain(ctx))
    schema = ctx.registry.manifest("odd", 1)["input_schema"]
    assert len({c["input"] for c in schema}) == len(schema)  # "a/b", "a_b" and "a.b" stay three inputs
    row = {c: 0.0 for c in ODD_NUMERIC} | {"cat/x": "v", "cat x": "p"}
    base = predict(ctx.server, "odd", {"instances": [row]})["predictions"][0]
    moved = predict(ctx.server, "odd", {"instances": [row | {"a/b": 1.0}]})["predictions"][0]
    other = predict(ctx.server, "odd", {"instances": [row | {"a_b": 1.0}]})["predictions"][0]
    cat = predict(ctx.server, "odd", {"instances": [row | {"cat/x": "u"}]})["predictions"][0]
    assert moved - base == pytest.approx(3, abs=0.3)   # each name reaches its own coefficient
    assert other - base == pytest.approx(-2, abs=0.3)
    assert cat - base == pytest.approx(4, abs=0.5)


def test_every_outcome_is_listed_with_its_reason(specs_ctx, tmp_path):
    ctx = specs_ctx
    # promoted, then rejected (a worse model on tiny data), quarantined, and failed at convert.
    drop(ctx, "wind_power", "good.parquet", to_parquet(wind(3000, seed=1)))
    drain(ctx)
    drop(ctx, "wind_power", "small.parquet", to_parquet(wind(250, seed=2)))
    drain(ctx)
    bad = wind(300, seed=3).drop(columns=["wind_speed"])
    refused = drop(ctx, "wind_power", "bad.parquet", to_parquet(bad))
    assert not refused.ok
    ctx.storage.put("datasets", "wind_power/not a name!.csv", b"x,y\n1,2\n")
    P.handle_dataset(ctx, "wind_power/not a name!.csv")

    runs = runs_of(ctx, "wind_power")
    by_outcome = {}
    for r in runs:
        by_outcome.setdefault(r["outcome"], []).append(r)
    assert len(by_outcome["promoted"]) == 1 and by_outcome["promoted"][0]["version"] == 1
    assert len(by_outcome["rejected"]) == 1 and "did not promote" in by_outcome["rejected"][0]["explanation"]
    assert len(by_outcome["quarantined"]) == 2
    assert any("wind_speed" in r["explanation"] for r in by_outcome["quarantined"])
    assert runs_of(ctx, "wind_power", outcome="rejected") == by_outcome["rejected"]

    detail = ctx.runs.describe("wind_power", by_outcome["rejected"][0]["run_id"])
    assert detail["dataset"]["name"] == "datasets/wind_power/small.parquet"
    assert len(detail["dataset"]["sha256"]) == 64 and detail["dataset"]["etag"] and detail["dataset"]["rows"] == 250
    assert len(detail["spec"]["sha256"]) == 64 and detail["params"]["n_estimators"] == 60
    assert {"validate", "fit", "convert", "parity", "register", "promote"} <= set(detail["timings"])
    assert detail["parity"]["passed"] and detail["parity"]["rows"] > 0
    decision = detail["decision"]
    assert decision["promoted"] is False and decision["champion_version"] == 1
    assert decision["candidate_metrics"]["rmse"] > 0 and decision["champion_metrics"]["rmse"] > 0


def test_a_parity_refusal_is_a_failed_run_and_the_503_names_it(specs_ctx, tmp_path):
    ctx = specs_ctx
    text = example_spec_text("wind_power")
    text = text.replace('class = "RandomForestRegressor"',
                        'class = "HistGradientBoostingRegressor"\nscale_numeric = true')
    text = text.replace(
        "params = { n_estimators = 60, max_depth = 14, min_samples_leaf = 3, n_jobs = 1, random_state = 7 }",
        "params = { max_iter = 50, random_state = 7 }")
    folder = tmp_path / "hgb"
    folder.mkdir()
    (folder / "wind_power.toml").write_text(text)
    ctx.specs = SpecCatalog(folder)
    run_id = drop(ctx, "wind_power", "w.parquet", to_parquet(wind(3000, seed=7))).run_id
    drain(ctx)
    [run] = runs_of(ctx, "wind_power", outcome="failed")
    assert run["run_id"] == run_id and run["error"]["stage"] == "convert" and run["error"]["code"] == "PARITY_FAILED"
    assert ctx.runs.describe("wind_power", run_id)["error"]["parity"]["over_tolerance"] > 0
    with pytest.raises(NoProductionVersion, match=f"run {run_id} failed at convert: ONNX and scikit-learn disagree"):
        ctx.server.get("wind_power")


def test_a_library_error_is_recorded_as_a_failed_run_on_its_first_delivery(ctx):
    drop(ctx, "breast_cancer", "b.csv", to_csv(cancer()))
    # Let train, convert and register run; then corrupt the committed manifest before promote.
    for queue, stage in ((ctx.settings.queue_convert, "convert"), (ctx.settings.queue_register, "register")):
        [m] = ctx.bus.receive(queue)
        assert P.run_stage(ctx, stage, P.RunMessage.parse(m.body)).ok
        ctx.bus.complete(m)
    ctx.storage.put("registry", "breast_cancer/versions/1/manifest.json", b"{not json")
    [m] = ctx.bus.receive(ctx.settings.queue_promote)
    result = P.run_stage(ctx, "promote", P.RunMessage.parse(m.body))  # returns: no retry, no dead letter
    assert not result.ok
    status = ctx.runs.status("breast_cancer", result.run_id)
    assert status["state"] == "failed"
    assert status["error"]["stage"] == "promote" and status["error"]["code"] == "PROMOTE_FAILED"
    assert "JSONDecodeError" in status["error"]["message"]


def test_transient_and_permanent_errors_are_told_apart():
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

    assert is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert is_transient(ConnectionResetError())
    assert is_transient(TransientError("storage unavailable"))
    assert is_transient(ServiceRequestError("connection refused"))
    throttled = HttpResponseError("slow down")
    throttled.status_code = 429
    assert is_transient(throttled)
    missing = ResourceNotFoundError("gone")
    missing.status_code = 404
    assert not is_transient(missing)
    assert not is_transient(ValueError("Required inputs are missing"))
    assert not is_transient(KeyError("x"))


def test_a_quarantine_record_is_superseded_by_a_later_valid_write(ctx):
    bad = cancer().drop(columns=["target"])
    refused = drop(ctx, "breast_cancer", "b.csv", to_csv(bad))
    [record] = quarantine.records(ctx.storage, "breast_cancer")
    assert "target" in record["reason"] and "superseded_by" not in record
    fixed = drop(ctx, "breast_cancer", "b.csv", to_csv(cancer()))
    assert fixed.ok and fixed.run_id != refused.run_id
    [record] = quarantine.records(ctx.storage, "breast_cancer")
    assert record["superseded_by"]["run_id"] == fixed.run_id


@pytest.mark.parametrize("blob", ["x.csv", "wind_power/sub/w.csv"])
def test_a_file_outside_a_model_folder_is_quarantined_and_listed_by_ops(ctx, blob, capsys, monkeypatch):
    ctx.storage.put("datasets", blob, to_csv(wind(200, seed=1)))
    result = P.handle_dataset(ctx, blob)
    assert not result.ok
    [record] = quarantine.records(ctx.storage)
    assert record["dataset"] == f"datasets/{blob}" and record["code"] == "INVALID_PATH"
    import ops
    from functions import root

    root.use(ctx)
    try:
        assert ops.main(["list"]) == 0
    finally:
        root.use(None)
    out = capsys.readouterr().out
    assert f"datasets/{blob}" in out and "INVALID_PATH" in out


def test_the_blob_trigger_sees_every_file_in_the_container():
    from devhost.blobs import compile_path
    from functions.train import train

    [trigger] = train.build().get_bindings()
    container, pattern = compile_path(trigger.get_dict_repr()["path"])
    assert container == "datasets"
    # A name with a line break was never matched, so never triggered nor quarantined: it sat in
    # datasets/ with no run and no record.
    for name in ("wind_power/w.csv", "x.csv", "wind_power/sub/w.csv", "wind_power/line\nbreak.csv"):
        assert pattern.match(name)


def test_a_version_leads_back_to_its_run_dataset_spec_code_and_decision(ctx):
    data = to_parquet(wind(2000, seed=4))
    drop(ctx, "wind_power", "w.parquet", data)
    drain(ctx)
    lineage = version_lineage(ctx, "wind_power", 1)
    assert lineage["dataset"]["name"] == "datasets/wind_power/w.parquet"
    assert lineage["dataset"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert lineage["dataset"]["etag"] == ctx.storage.head("datasets", "wind_power/w.parquet").etag
    assert lineage["spec"]["sha256"] == ctx.specs.get("wind_power").sha256
    assert len(lineage["code"]["sources_sha256"]) == 64
    assert lineage["libraries"]["scikit-learn"] and lineage["libraries"]["onnxruntime"]
    assert lineage["decision"]["promoted"] is True and lineage["aliases"] == ["production"]
    assert ctx.runs.describe("wind_power", lineage["run_id"])["version"] == 1


@pytest.mark.parametrize("model, frame", [("wind_power", lambda: wind(1500, seed=5)), ("breast_cancer", cancer)])
def test_retraining_the_same_dataset_with_the_same_spec_gives_the_same_onnx_bytes(ctx, tmp_path, model, frame,
                                                                                  example_models):
    data = to_parquet(frame())
    elsewhere = Context.from_settings(Settings.from_env({
        "MLOPS_DATA_DIR": str(tmp_path / "elsewhere"), "MLOPS_MODELS_DIR": str(example_models)}))
    shas = []
    for where in (ctx, elsewhere):  # two registries, so neither run can be taken for the other
        drop(where, model, "d.parquet", data)
        drain(where)
        shas.append(where.registry.manifest(model, 1)["onnx"]["sha256"])
    assert shas[0] == shas[1]


def test_every_allowed_estimator_draws_its_randomness_from_the_spec(ctx):
    from shared.core.spec import ESTIMATORS
    from shared.pipeline.train import build_pipeline

    base = ctx.specs.get("wind_power")
    for name in ESTIMATORS:
        spec = dataclasses.replace(base, estimator=name, params={})
        estimator = build_pipeline(spec).named_steps["estimator"]
        assert estimator.get_params().get("random_state", base.seed) == base.seed, name


def test_every_allowed_estimator_converts_to_the_same_bytes_twice(ctx):
    from shared.core.spec import ESTIMATORS
    from shared.pipeline.convert import convert
    from shared.pipeline.train import fit

    frames = {"regression": wind(400, seed=8), "binary": cancer().head(300)}
    for name, (_, tasks, _) in ESTIMATORS.items():
        base = ctx.specs.get("wind_power" if "regression" in tasks else "breast_cancer")
        spec = dataclasses.replace(base, estimator=name, params={}, min_rows=50)
        frame = frames["regression" if "regression" in tasks else "binary"]
        digests = {hashlib.sha256(convert(fit(frame, spec).pipeline, spec)).hexdigest() for _ in range(2)}
        assert len(digests) == 1, name
