"""Data must match its spec before anything is fitted: types, degenerate targets, cardinality.

And the spec itself: a typo in a key is refused, never read as a default.
"""
from __future__ import annotations

import decimal

import numpy as np
import pandas as pd
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.core.errors import DatasetError, SpecError
from shared.core.spec import SpecCatalog, parse_spec
from shared.pipeline.data import read_table, validate
from shared.pipeline.train import split
from tests.conftest import ROOT, to_csv, to_parquet

SPECS = SpecCatalog(ROOT / "models")
WIND = SPECS.get("wind_power")


def check(frame: pd.DataFrame, model: str = "wind_power", fmt: str = "parquet"):
    data, name = (to_parquet(frame), "a.parquet") if fmt == "parquet" else (to_csv(frame), "a.csv")
    return validate(read_table(data, name), SPECS.get(model), name)


@pytest.mark.parametrize("column,kind,make", [
    ("turbine_id", "binary", lambda s: s.str.encode("ascii")),
    ("turbine_id", "struct", lambda s: [{"id": v} for v in s]),
    ("turbine_id", "list", lambda s: [[v] for v in s]),
    ("turbine_id", "datetime", lambda s: pd.Timestamp("2026-01-01") + pd.to_timedelta(s.str[1:].astype(int), unit="D")),
    ("wind_speed", "datetime", lambda s: pd.Timestamp("2026-01-01") + pd.to_timedelta(s, unit="h")),
    ("wind_speed", "binary", lambda s: s.astype(str).str.encode("ascii")),
    ("wind_speed", "struct", lambda s: [{"v": v} for v in s]),
    ("wind_speed", "list", lambda s: [[v] for v in s]),
    ("wind_speed", "string", lambda s: s.astype(str)),  # Parquet is typed: text is not a number
    ("wind_speed", "duration", lambda s: pd.to_timedelta(s, unit="s")),
])
def test_a_feature_of_the_wrong_type_is_refused_naming_column_and_type(column, kind, make):
    df = wind(300)
    df[column] = make(df[column])
    with pytest.raises(DatasetError, match=f"column '{column}' is a .* feature but holds {kind} values") as err:
        check(df)
    assert err.value.details == {"column": column, "found": kind}


def test_a_binary_id_is_never_stringified_even_from_an_in_memory_frame():
    df = wind(300)
    df["turbine_id"] = df["turbine_id"].str.encode("ascii")
    with pytest.raises(DatasetError, match="holds binary values"):
        validate(df, WIND, "frame")


@pytest.mark.parametrize("make", [
    lambda s: s.astype("float32"),
    lambda s: s.round().astype("int64"),
    lambda s: s.map(lambda v: decimal.Decimal(str(v))),
    lambda s: s > 8,
])
def test_int_float_decimal_and_bool_numeric_features_are_accepted(make):
    df = wind(300)
    df["wind_speed"] = make(df["wind_speed"])
    assert check(df).frame["wind_speed"].dtype == np.float64


def test_csv_numbers_are_still_parsed_from_text():
    assert check(wind(300), fmt="csv").frame["wind_speed"].dtype == np.float64


def test_a_constant_regression_target_is_refused():
    df = wind(300)
    df["power_kw"] = 0
    with pytest.raises(DatasetError, match=r"target 'power_kw' is constant \(every row is 0\)"):
        check(df)


def test_a_class_too_small_for_both_splits_is_refused_naming_it():
    df = cancer()
    rare = df[df["target"] == 1].head(1).assign(target=7)  # one row of a third class
    spec = SPECS.get("breast_cancer")
    from dataclasses import replace

    frame = pd.concat([df, rare], ignore_index=True)
    frame = validate(frame, replace(spec, task="multiclass"), "a.csv").frame
    with pytest.raises(DatasetError, match="class 7 has 1 row.*both the training and the hold-out"):
        split(frame, replace(spec, task="multiclass"))


def test_a_categorical_feature_over_the_bound_is_refused():
    df = wind(1000)
    df["turbine_id"] = [f"X{i}" for i in range(1000)]
    with pytest.raises(DatasetError, match="'turbine_id' has 1,000 distinct values, over the spec's bound of 100"):
        check(df)
    text = (ROOT / "models" / "wind_power.toml").read_text().replace(
        'categorical = ["turbine_id"]', 'categorical = ["turbine_id"]\nmax_categories = 2000')
    assert validate(df, parse_spec(text, "models/wind_power.toml"), "a.parquet").rows == 1000


@pytest.mark.parametrize("old,new,key", [
    ("[promotion]\n", "[promotion]\nflor = 1.0\n", "promotion.flor"),
    ("[training]\n", "[training]\nholdout = 0.3\n", "training.holdout"),
    ("[parity]\n", "[exam]\nrecent = 3\n\n[parity]\n", "exam.recent"),
    ("[parity]\n", "[promotions]\nmargin = 1\n\n[parity]\n", "promotions"),
])
def test_a_typo_in_a_spec_key_is_refused_not_defaulted(old, new, key):
    text = (ROOT / "models" / "wind_power.toml").read_text().replace(old, new, 1)
    with pytest.raises(SpecError, match=f"key '{key}' is not a"):
        parse_spec(text, "models/wind_power.toml")


def test_exam_settings_have_defaults_and_are_read():
    assert (WIND.exam.recent_datasets, WIND.exam.max_rows, WIND.max_categories) == (1, 20_000, 100)
    text = (ROOT / "models" / "wind_power.toml").read_text() + "\n[exam]\nrecent_datasets = 5\nmax_rows = 100\n"
    spec = parse_spec(text, "models/wind_power.toml")
    assert (spec.exam.recent_datasets, spec.exam.max_rows) == (5, 100)
