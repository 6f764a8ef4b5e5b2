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
