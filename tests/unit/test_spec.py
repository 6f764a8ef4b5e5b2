"""Specs parse, and a bad spec names its file and key."""
from __future__ import annotations

import pytest

from shared.core.errors import ModelNotFound, SpecError
from shared.core.spec import SpecCatalog, parse_spec
from tests.conftest import EXAMPLE_SPECS

GOOD = """
[model]
name = "demo"
task = "regression"
target = "y"
[features]
numeric = ["a", "b"]
categorical = ["c"]
[estimator]
class = "Ridge"
params = { alpha = 1.0 }
[promotion]
metric = "rmse"
floor = 10
"""


def test_the_shipped_examples_parse(example_models):
    catalog = SpecCatalog(example_models)  # a copy of the shipped specs, none a user added
    assert catalog.names() == sorted(EXAMPLE_SPECS) == ["breast_cancer", "wind_power"]
    wind = catalog.get("wind_power")
    assert wind.task == "regression" and wind.categorical == ("turbine_id",)
    assert catalog.get("breast_cancer").is_classifier


def test_defaults_fill_the_optional_keys():
    spec = parse_spec(GOOD, "models/demo.toml")
    assert spec.features == ("a", "b", "c")
    assert spec.holdout_fraction == 0.2 and spec.margin == 0.0 and spec.floor == 10.0
    assert not spec.higher_is_better


@pytest.mark.parametrize(
    "old,new,key",
    [
        ('class = "Ridge"', 'class = "os.system"', "estimator.class"),
        ('class = "Ridge"', 'class = "LogisticRegression"', "estimator.class"),
        ('task = "regression"', 'task = "clustering"', "model.task"),
        ('metric = "rmse"', 'metric = "roc_auc"', "promotion.metric"),
        ('floor = 10', 'floor = "low"', "promotion.floor"),
        ('target = "y"', 'target = "a"', "model.target"),
        ('name = "demo"', 'name = "../etc"', "model.name"),
        ('numeric = ["a", "b"]', 'numeric = ["a", 3]', "features.numeric"),
        ("params = { alpha = 1.0 }", "params = { alpha = [1, 2] }", "estimator.params.alpha"),
        ("[promotion]", "[promotion]\nmargin = 2", "promotion.margin"),
    ],
)
def test_a_bad_value_names_the_file_and_key(old, new, key):
    with pytest.raises(SpecError) as err:
        parse_spec(GOOD.replace(old, new), "models/demo.toml")
    assert "models/demo.toml" in err.value.message
    assert f"'{key}'" in err.value.message


@pytest.mark.parametrize("column", ["time", "row", "version", "request_id", "error", "prediction", "truth",
                                    "proba_setosa"])
def test_a_feature_named_as_a_column_of_the_inference_log_is_refused(column):
    # A model with features 'time', 'row', 'version' and 'error' trained and served, but its
    # inference log held the features in those columns: 300 feedback items all unmatched, every
    # monitoring run "insufficient_data on 0 rows", with no error anywhere.
    with pytest.raises(SpecError) as err:
        parse_spec(GOOD.replace('categorical = ["c"]', f'categorical = ["{column}"]'), "models/demo.toml")
    assert "'features'" in err.value.message
    assert f"names '{column}', a column the inference log writes for itself" in err.value.message


def test_a_missing_key_is_named():
    with pytest.raises(SpecError, match="'model.target' is missing"):
        parse_spec(GOOD.replace('target = "y"\n', ""), "models/demo.toml")


def test_invalid_toml_names_the_file():
    with pytest.raises(SpecError, match="models/demo.toml: not valid TOML"):
        parse_spec("[model\nname=", "models/demo.toml")


def test_file_name_must_match_the_model_name(tmp_path):
    (tmp_path / "other.toml").write_text(GOOD)
    with pytest.raises(SpecError, match="named for 'other'"):
        SpecCatalog(tmp_path).get("other")


def test_unknown_model_is_not_found(tmp_path):
    with pytest.raises(ModelNotFound):
        SpecCatalog(tmp_path).get("nothing")


def test_the_refused_names_are_every_column_the_inference_log_writes_itself(tmp_path):
    import io
    import time

    import numpy as np
    import pyarrow.parquet as pq

    from shared.core.spec import LOG_COLUMN_PREFIX, LOG_COLUMNS
    from shared.ports.storage.local import LocalStorage
    from shared.serving.inference_log import InferenceLogger, LogRecord
    from shared.serving.protocols.native import parse_payload

    storage = LocalStorage(tmp_path / "blobs")
    schema = (("speed", "float"), ("site", "string"))
    rows = parse_payload({"inputs": {"speed": [1.0, 2.0], "site": ["a", "b"]}}, schema, 10)
    logger = InferenceLogger(storage, flush_seconds=60)
    logger.record(LogRecord("m", 1, "r1", time.time(), 0.1, rows, None, np.array(["yes", "no"]),
                            np.array([[0.2, 0.8], [0.7, 0.3]]), ("no", "yes"), correlation_id="c", error=None))
    assert logger.flush() == 2
    logger.close()
    [blob] = [b for b in storage.list("inference-logs") if b.name.endswith(".parquet")]
    written = set(pq.read_table(io.BytesIO(storage.get("inference-logs", blob.name).data)).column_names)
    own = written - {"speed", "site"}
    assert own - {f"{LOG_COLUMN_PREFIX}no", f"{LOG_COLUMN_PREFIX}yes"} <= set(LOG_COLUMNS)
