"""The promotion gate in-process: concept drift wins, forged labels lose, identical drops are duplicates."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from models.wind_power_data import generate as wind
from shared.core.spec import SpecCatalog
from shared.pipeline import exam
from tests.conftest import example_spec_text, to_parquet
from tests.helpers import drain, drop


def _decision(ctx, version: int) -> dict:
    return json.loads(ctx.storage.get("registry", f"wind_power/decisions/{version}.json").data)


@pytest.mark.parametrize("recent_datasets,promoted", [(1, True), (2, False)])
def test_a_winter_model_wins_when_winter_data_arrives_unless_the_exam_keeps_summer(ctx, tmp_path, recent_datasets,
                                                                                   promoted):
    """Both ways: with the default recency (the newest dataset) the winter candidate, better on
    winter rows, replaces the summer model; an exam that also keeps the summer hold-out (and
    is mostly summer rows) holds it back, and the decision says it was the exam."""
    text = example_spec_text("wind_power")
    if recent_datasets != 1:
        text += f"\n[exam]\nrecent_datasets = {recent_datasets}\n"
    (tmp_path / "wind_power.toml").write_text(text)
    ctx.specs = SpecCatalog(tmp_path)
    drop(ctx, "wind_power", "summer.parquet", to_parquet(wind(10_000, seed=1)))
    drain(ctx)
    drop(ctx, "wind_power", "winter.parquet", to_parquet(wind(3000, seed=2, regime="winter")))
    drain(ctx)
    d = _decision(ctx, 2)
    assert d["promoted"] is promoted, d["reason"]
    assert ctx.registry.alias("wind_power").version == (2 if promoted else 1)
    hold = d["holdout"]
    assert hold["passed"] and hold["candidate"]["rmse"] < hold["production"]["rmse"]  # better on winter rows
    assert d["exam"]["sources"] == recent_datasets and d["exam"]["rows"] == d["exam"]["exam_rows"]
    if promoted:
        assert d["exam"]["rows"] == hold["rows"]  # the exam is winter's hold-out
    else:
        assert d["exam"]["rows"] > 3 * hold["rows"] and not d["exam"]["passed"]
        assert "is worse than production's" in d["exam"]["reason"] and "on the exam" in d["reason"]


def test_a_retraining_dataset_is_judged_on_the_exam_and_never_changes_it(ctx):
    drop(ctx, "wind_power", "summer.parquet", to_parquet(wind(4000, seed=1)))
    drain(ctx)
    before = exam.latest(ctx.storage, "wind_power")
    # What retraining assembles, with forged live rows: 0 kW for T03 and T05.
    base = wind(4000, seed=1).assign(_origin="dataset")
    forged = wind(3000, seed=5).query("turbine_id in ['T03', 'T05']").assign(power_kw=0.0, _origin="feedback")
    drop(ctx, "wind_power", "retrain-20261126.parquet", to_parquet(pd.concat([base, forged], ignore_index=True)))
    drain(ctx)
    d = _decision(ctx, 2)
    assert not d["promoted"] and d["exam_source"] is False
    assert d["exam"]["version"] == before.version and d["exam"]["sha256"] == before.sha256
    assert not d["exam"]["passed"] and d["exam"]["candidate"]["rmse"] > 1.5 * d["exam"]["production"]["rmse"]
    assert exam.latest(ctx.storage, "wind_power").version == before.version  # forged rows never entered
    assert ctx.registry.alias("wind_power").version == 1
    # Same split fraction on both sides: every row of the candidate's hold-out is one production
    # never trained on (the content-hash split put the summer rows on the same side again).
    assert d["unseen_fraction"] == 0.2 and d["holdout"]["rows"] == d["holdout"]["rows_total"]
    def holdout_keys(run_id: str) -> set[int]:
        return set(pd.read_parquet(io.BytesIO(ctx.runs.get("wind_power", run_id, "holdout.parquet")))["_row_key"])

    assert holdout_keys(ctx.registry.manifest("wind_power", 1)["run_id"]) <= holdout_keys(d["run_id"])


def test_identical_content_is_a_duplicate_under_any_name_until_the_spec_changes(ctx, tmp_path):
    data = to_parquet(wind(1500, seed=2))
    first = drop(ctx, "wind_power", "a.parquet", data)
    drain(ctx)
    again = drop(ctx, "wind_power", "copy-of-a.parquet", data)
    assert again.ok and f"duplicate of run {first.run_id}" in again.detail
    status = ctx.runs.status("wind_power", again.run_id)
    assert status["state"] == "duplicate" and status["duplicate_of"] == first.run_id
    assert drain(ctx) == [] and ctx.registry.versions("wind_power") == [1]
    # A changed spec is a different training: the same bytes train again.
    text = example_spec_text("wind_power").replace("n_estimators = 60", "n_estimators = 20")
    (tmp_path / "wind_power.toml").write_text(text)
    ctx.specs = SpecCatalog(tmp_path)
    third = drop(ctx, "wind_power", "b.parquet", data)
    assert "duplicate" not in third.detail
    drain(ctx)
    assert ctx.registry.versions("wind_power") == [1, 2]
