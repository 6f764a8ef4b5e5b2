"""The session cache, the inference log and feedback, on real storage and real ONNX sessions."""
from __future__ import annotations

import errno
import io
import json
import threading
import time

import pandas as pd
import pytest

from models.breast_cancer_data import generate as cancer
from shared.core.errors import InvalidRequest
from shared.registry.store import PRODUCTION
from shared.serving.feedback import parse_feedback, store_feedback
from shared.serving.inference_log import InferenceLogger, LogRecord
from shared.serving.inprocess import predict
from shared.serving.protocols.native import encode, parse_payload
from shared.serving.runtime import ModelServer
from tests.conftest import example_spec_text, to_csv
from tests.helpers import drain, drop

ROWS = cancer().drop(columns="target").head(4).to_dict("records")


@pytest.fixture
def two_versions(ctx):
    """breast_cancer with versions 1 and 2 registered, production on 1."""
    drop(ctx, "breast_cancer", "a.csv", to_csv(cancer()))
    drain(ctx)
    drop(ctx, "breast_cancer", "b.csv", to_csv(cancer().iloc[::-1]))
    drain(ctx)
    assert ctx.registry.versions("breast_cancer") == [1, 2]
    current = ctx.registry.alias("breast_cancer")
    if current.version != 1:
        ctx.registry.move_alias("breast_cancer", PRODUCTION, 1, expected=current, event="rollback", reason="t",
                                actor="t")
    return ctx


def move(ctx, version):
    current = ctx.registry.alias("breast_cancer")
    ctx.registry.move_alias("breast_cancer", PRODUCTION, version, expected=current, event="set_alias", reason="t",
                            actor="t")


def test_a_promotion_is_swapped_in_by_refresh_and_a_held_version_keeps_working(two_versions):
    ctx = two_versions
    server = ModelServer(ctx.registry, ctx.specs, ctx.settings)
    held = server.get("breast_cancer")
    assert held.version == 1
    move(ctx, 2)
    assert server.get("breast_cancer").version == 1  # the request path does no I/O
    assert server.refresh("breast_cancer") is True
    assert server.get("breast_cancer").version == 2 and server.swaps == 1
    # A request that started on version 1 finishes on it: its session still runs.
    assert encode(server.run(held, parse_payload({"instances": ROWS}, held.schema, 10)))["version"] == 1
    assert server.refresh("breast_cancer") is False  # unchanged alias: a 304-style read
    server.close()


def test_the_background_refresher_swaps_within_two_intervals(two_versions):
    ctx = two_versions
    from dataclasses import replace

    server = ModelServer(ctx.registry, ctx.specs, replace(ctx.settings, alias_check_seconds=0.2))
    assert server.get("breast_cancer").version == 1
    moved_at = time.monotonic()
    move(ctx, 2)
    while server.get("breast_cancer").version != 2:
        assert time.monotonic() - moved_at < 0.4 + 0.5, "not swapped within two intervals (+ load time)"
        time.sleep(0.01)
    server.close()


def test_a_tampered_new_version_is_refused_alerted_and_the_old_one_keeps_serving(two_versions):
    ctx = two_versions
    server = ModelServer(ctx.registry, ctx.specs, ctx.settings, alert=ctx.alert)
    assert server.get("breast_cancer").version == 1
    ctx.storage.put("registry", "breast_cancer/versions/2/model.onnx", b"evil")
    move(ctx, 2)
    with pytest.raises(Exception, match="SHA-256"):
        server.refresh("breast_cancer")
    assert server.get("breast_cancer").version == 1
    [alert] = ctx.bus.peek(ctx.settings.queue_alerts)
    body = json.loads(alert.body)
    assert body["alert"] == "integrity" and body["version"] == 2 and "refusing to load" in body["message"]
    server.close()


@pytest.mark.parametrize("numeric", [
    None,  # the spec as shipped: four numeric columns and one categorical
    '["wind_speed"]',  # one numeric column: fed as it is, no rewrite
    "[]",  # categorical only: no numeric block at all
])
def test_the_served_graph_answers_exactly_what_the_registered_graph_answers(ctx, tmp_path, numeric):
    import numpy as np

    from models.wind_power_data import generate as wind
    from shared.core.spec import SpecCatalog
    from shared.serving.graph import new_session
    from tests.conftest import to_parquet

    text = example_spec_text("wind_power").replace("floor = 250.0", "floor = 5000.0")
    if numeric is not None:
        text = text.replace('numeric = ["wind_speed", "wind_direction", "air_temperature", "air_density"]',
                            f"numeric = {numeric}")
    (tmp_path / "wind_power.toml").write_text(text)
    ctx.specs = SpecCatalog(tmp_path)
    drop(ctx, "wind_power", "w.parquet", to_parquet(wind(2000, seed=3)))
    drain(ctx)
    server = ModelServer(ctx.registry, ctx.specs, ctx.settings)
    loaded = server.get("wind_power")
    rows = wind(500, seed=4)[list(loaded.input_names)]
    batch = parse_payload({"instances": rows.to_dict("records")}, loaded.schema, 1000)
    registered = new_session(ctx.registry.model_bytes("wind_power", 1))
    per_column = {n: np.asarray(v).reshape(-1, 1) for n, v in batch.columns().items()}
    expected = registered.run(None, per_column)[0].ravel()
    assert len(loaded.session.get_inputs()) == min(len(loaded.schema), 2)
    assert np.array_equal(server.run(loaded, batch).values, expected)  # bit for bit
    server.close()


def test_inference_log_writes_sampled_batches_as_parquet(ctx):
    logger = InferenceLogger(ctx.storage, sample_rate=1.0, flush_seconds=60)
    import numpy as np

    for i in range(3):
        batch = parse_payload({"inputs": {"speed": [1.0, 2.0], "turbine": ["a", "b"]}},
                              (("speed", "float"), ("turbine", "string")), 10)
        logger.record(LogRecord("wind_power", 1, f"req-{i}", time.time(), 0.5, batch, np.array([10.0, 20.0]), None,
                                None, None))
    assert logger.flush() == 6
    [part] = ctx.storage.list("inference-logs", "wind_power/")
    table = pd.read_parquet(io.BytesIO(ctx.storage.get("inference-logs", part.name).data))
    assert len(table) == 6 and set(table["request_id"]) == {"req-0", "req-1", "req-2"}
    assert list(table.columns[:5]) == ["request_id", "row", "time", "version", "latency_ms"]
    assert table["prediction"].tolist() == [10.0, 20.0] * 3
    assert table["speed"].tolist() == [1.0, 2.0] * 3 and table["turbine"].tolist() == ["a", "b"] * 3
    assert logger.stats()["written_rows"] == 6 and logger.stats()["dropped_rows"] == 0


def test_inference_log_records_a_null_category_as_null_and_an_empty_one_as_empty(ctx):
    import numpy as np

    logger = InferenceLogger(ctx.storage, flush_seconds=60)
    schema = (("speed", "float"), ("turbine", "string"))
    for turbines in (["a", None, ""], ["", "b", "c"]):  # the second request has no null at all
        batch = parse_payload({"inputs": {"speed": [1.0, 2.0, 3.0], "turbine": turbines}}, schema, 10)
        logger.record(LogRecord("wind_power", 1, "r", time.time(), 0.5, batch, np.zeros(3), None, None, None))
    assert logger.flush() == 6
    [part] = ctx.storage.list("inference-logs", "wind_power/")
    table = pd.read_parquet(io.BytesIO(ctx.storage.get("inference-logs", part.name).data))
    assert table["turbine"].isna().tolist() == [False, True, False, False, False, False]
    assert table["turbine"].fillna("<null>").tolist() == ["a", "<null>", "", "", "b", "c"]


def test_inference_log_rolls_buffers_over_and_splits_files_by_hour(ctx):
    import numpy as np

    schema = (("speed", "float"), ("turbine", "string"))
    logger = InferenceLogger(ctx.storage, flush_seconds=60, flush_rows=3)  # buffers of 3 rows
    hour = 1_800_000_000 - 1_800_000_000 % 3600  # an hour boundary
    sent = []
    for i, (at, n) in enumerate([(hour - 0.2, 2), (hour - 0.1, 2), (hour + 0.1, 5), (hour - 0.05, 1), (hour + 0.2, 2)]):
        speeds = [float(10 * i + r) for r in range(n)]
        batch = parse_payload({"inputs": {"speed": speeds, "turbine": [f"T{i}"] * n}}, schema, 100)
        assert logger.record(LogRecord("wind_power", 1, f"req-{i}", at, 0.5, batch, np.array(speeds) * 2, None, None,
                                       None))
        sent += [(f"req-{i}", r, s, at < hour) for r, s in enumerate(speeds)]
    assert logger.flush() == 12
    tables = {}
    for part in ctx.storage.list("inference-logs", "wind_power/"):
        folder = part.name.rsplit("/", 1)[0]
        table = pd.read_parquet(io.BytesIO(ctx.storage.get("inference-logs", part.name).data))
        tables.setdefault(folder, []).append(table)
    before = time.strftime("%Y-%m-%d/%H", time.gmtime(hour - 1))
    after = time.strftime("%Y-%m-%d/%H", time.gmtime(hour))
    assert set(tables) == {f"wind_power/{before}", f"wind_power/{after}"}
    got = set()
    for folder, parts in tables.items():
        for t in parts:
            assert (t["prediction"] == t["speed"] * 2).all() and (t["turbine"] == "T" + t["request_id"].str[4:]).all()
            got |= {(r, int(n), float(s), folder.endswith(before))
                    for r, n, s in zip(t["request_id"], t["row"], t["speed"])}
    assert got == set(sent)
    assert logger.stats()["buffered_rows"] == 0 and logger.stats()["dropped_rows"] == 0


def test_inference_log_sampling_and_overflow_are_counted(ctx):
    import random

    import numpy as np

    rec = LogRecord("m", 1, "r", time.time(), 0.1, _zeros(10), np.zeros(10), None, None, None)
    sampled = InferenceLogger(ctx.storage, sample_rate=0.25, rng=random.Random(1))
    kept = sum(sampled.record(rec) for _ in range(400))
    assert 60 <= kept <= 140
    small = InferenceLogger(ctx.storage, max_buffered_rows=25)
    assert [small.record(rec) for _ in range(3)] == [True, True, False]
    assert small.stats()["dropped_rows"] == 10


def _zeros(rows: int):
    return parse_payload({"inputs": {"x": [0.0] * rows}}, (("x", "float"),), rows)


class _BrokenStorage:
    """Refuses writes: for good (a permission error), or for the first ``transient`` ones (a full disk)."""

    def __init__(self, transient: int = 0) -> None:
        self.transient, self.written = transient, []

    def put(self, container, name, data, **k):
        if self.transient:
            self.transient -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        raise PermissionError(errno.EACCES, "Permission denied")


class _FullDisk(_BrokenStorage):
    def put(self, container, name, data, **k):
        if self.transient:
            self.transient -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        self.written.append(name)


def test_a_logging_failure_drops_and_counts_but_never_raises():
    import numpy as np

    logger = InferenceLogger(_BrokenStorage(), flush_seconds=60)
    rec = LogRecord("m", 1, "r", time.time(), 0.1, _zeros(2), np.zeros(2), None, None, None)
    assert logger.record(rec)
    assert logger.flush() == 0
    assert logger.stats()["dropped_rows"] == 2 and logger.stats()["write_failures"] == 1


def test_rows_a_full_disk_refused_are_written_by_the_next_flush():
    import numpy as np

    storage = _FullDisk(transient=1)
    logger = InferenceLogger(storage, flush_seconds=60)
    assert logger.record(LogRecord("m", 1, "r", time.time(), 0.1, _zeros(2), np.zeros(2), None, None, None))
    assert logger.flush() == 0 and logger.unwritten_rows == 2 and logger.stats()["dropped_rows"] == 0
    assert logger.flush() == 2 and logger.unwritten_rows == 0 and len(storage.written) == 1


def test_feedback_is_validated_and_stored(ctx):
    spec = ctx.specs.get("breast_cancer")
    items = parse_feedback({"feedback": [{"request_id": "r1", "label": 1},
                                         {"request_id": "r2", "row": 3, "label": "0"}]}, spec)
    where = store_feedback(ctx.storage, "breast_cancer", items)
    table = pd.read_parquet(io.BytesIO(ctx.storage.get("feedback", where.split("/", 1)[1]).data))
    assert table[["request_id", "row", "truth"]].values.tolist() == [["r1", 0, "1"], ["r2", 3, "0"]]
    with pytest.raises(InvalidRequest, match="needs 'value'"):
        parse_feedback({"feedback": [{"request_id": "r", "label": 1}]}, ctx.specs.get("wind_power"))
    with pytest.raises(InvalidRequest, match=r"feedback\[0\].request_id"):
        parse_feedback({"feedback": [{"label": 1}]}, spec)


def test_concurrent_requests_during_swaps_always_get_a_whole_version(two_versions):
    ctx = two_versions
    server = ModelServer(ctx.registry, ctx.specs, ctx.settings)
    server.get("breast_cancer")
    errors, seen = [], set()
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                seen.add(predict(server, "breast_cancer", {"instances": ROWS})["version"])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(10):
        move(ctx, 2 if i % 2 == 0 else 1)
        server.refresh("breast_cancer")
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and seen == {1, 2} and server.swaps == 10
    server.close()


ODD_SPEC = """[model]
name = "odd"
task = "binary"
target = "label"
[features]
numeric = ["x float", "ünï/code", "flag", "nullable_int"]
categorical = ["cat_dtype", "str_dtype", "int_cat", "bool_cat"]
[estimator]
class = "LogisticRegression"
[training]
seed = 1
min_rows = 50
[promotion]
metric = "accuracy"
floor = 0.6
"""


def odd_frame(n: int = 600) -> pd.DataFrame:
    """The column types a data scientist's Parquet holds: bools, nullable integers, pandas
    categoricals, the string dtype with NA and '', integer and boolean categories."""
    import numpy as np

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "x float": rng.normal(size=n),
        "ünï/code": rng.integers(0, 5, n),
        "flag": rng.random(n) > 0.5,
        "nullable_int": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 100, n)), dtype="Int64"),
        "cat_dtype": pd.Categorical(rng.choice(["red", "green", "blue"], n)),
        "str_dtype": pd.array(np.where(rng.random(n) < 0.1, None, rng.choice(["a", "b", ""], n)), dtype="string"),
        "int_cat": rng.choice([10, 20, 30], n),
        "bool_cat": rng.random(n) > 0.3,
    })
    signal = (frame["x float"] + frame["flag"] + (frame["int_cat"] == 20)
              - (frame["bool_cat"] & (frame["cat_dtype"] == "red")))
    frame["label"] = np.where(signal > 0.5, "yes", "no")
    return frame


def test_odd_column_types_are_served_from_the_values_their_rows_hold(ctx, tmp_path):
    """Clients send what their data holds (true, 20, null); the server reads it as training read
    the dataset, so each row answers as its training twin does."""
    import numpy as np

    from shared.core.spec import SpecCatalog
    from shared.pipeline.convert import feeds_from_frame
    from shared.pipeline.data import read_table, validate
    from shared.serving.graph import new_session, run_session
    from tests.conftest import to_parquet
    from tests.datasets import as_records

    (tmp_path / "odd.toml").write_text(ODD_SPEC)
    ctx.specs = SpecCatalog(tmp_path)
    frame = odd_frame()
    data = to_parquet(frame)
    assert drop(ctx, "odd", "odd.parquet", data).ok
    drain(ctx)
    manifest = ctx.registry.manifest("odd", 1)
    typed = validate(read_table(data, "odd.parquet"), ctx.specs.get("odd"), "odd.parquet").frame.head(60)
    twin = run_session(new_session(ctx.registry.model_bytes("odd", 1)),
                       feeds_from_frame(typed, manifest["input_schema"]), True)

    raw = frame.drop(columns="label").head(60)
    rows = as_records(raw)  # a client's JSON: Python bools, ints and None
    assert {type(rows[0][c]) for c in ("flag", "bool_cat")} == {bool} and type(rows[0]["int_cat"]) is int
    served = predict(ModelServer(ctx.registry, ctx.specs, ctx.settings), "odd", {"instances": rows})
    assert [p["label"] for p in served["predictions"]] == twin.labels.tolist()
    probabilities = np.array([list(p["probabilities"].values()) for p in served["predictions"]])
    assert np.allclose(probabilities, twin.probabilities, rtol=1e-6, atol=1e-7)


def test_feedback_naming_a_label_the_model_does_not_have_is_refused_naming_the_item(ctx):
    # A label outside the model's classes ("zero" for classes 0 and 1) was accepted and stored
    # (202, matched): one such item made the next monitoring run "degraded" (accuracy 0 on 1 row).
    from shared.serving.feedback import accept_feedback

    drop(ctx, "breast_cancer", "a.csv", to_csv(cancer()))
    drain(ctx)
    with pytest.raises(InvalidRequest) as caught:
        accept_feedback(ctx, "breast_cancer", {"feedback": [{"request_id": "r1", "label": 1},
                                                            {"request_id": "r2", "label": "zero"}]})
    assert caught.value.details == {"field": "feedback[1].label", "row": 1}
    assert "'zero' is not a class of breast_cancer" in caught.value.message and "0, 1" in caught.value.message
    answer = accept_feedback(ctx, "breast_cancer", {"feedback": [{"request_id": "r1", "label": 1},
                                                                 {"request_id": "r2", "label": "0"}]})
    assert (answer["received"], answer["unmatched"]) == (2, 2)  # valid labels, no logged rows
