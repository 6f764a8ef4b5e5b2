"""Promotion rules from the guarded-rollout issue, through the stages in-process: a changed input
contract is never promoted automatically, production that cannot be scored is no licence to
promote on the floor alone, and the same table in another column order is a duplicate run."""
from __future__ import annotations

import json

from models.wind_power_data import generate as wind
from shared.core.spec import SpecCatalog
from tests.conftest import example_spec_text, to_csv, to_parquet
from tests.helpers import drain, drop

ALL = '["wind_speed", "wind_direction", "air_temperature", "air_density"]'
WITHOUT_DENSITY = '["wind_speed", "wind_direction", "air_temperature"]'


def _spec(ctx, tmp_path, numeric: str) -> None:
    # A floor any fit clears and a wide margin: only the rule under test can hold a candidate back.
    text = example_spec_text("wind_power")
    text = text.replace(f"numeric = {ALL}", f"numeric = {numeric}")
    text = text.replace("floor = 250.0", "floor = 5000.0").replace("margin = 0.02", "margin = 0.9")
    (tmp_path / "wind_power.toml").write_text(text)
    ctx.specs = SpecCatalog(tmp_path)


def _decision(ctx, version: int) -> dict:
    return json.loads(ctx.storage.get("registry", f"wind_power/decisions/{version}.json").data)


def test_a_candidate_with_another_input_contract_waits_for_an_operator(ctx, tmp_path):
    _spec(ctx, tmp_path, WITHOUT_DENSITY)
    drop(ctx, "wind_power", "a.parquet", to_parquet(wind(1500, seed=1)))
    drain(ctx)
    _spec(ctx, tmp_path, ALL)  # a feature added: production's callers do not send it
    drop(ctx, "wind_power", "b.parquet", to_parquet(wind(1500, seed=2)))
    drain(ctx)
    d = _decision(ctx, 2)
    assert not d["promoted"] and d["holdout"]["passed"] and d["holdout"]["production"] is not None
    assert d["contract_changes"] == ["added 'air_density'"] and d["schema_version"] == 3
    assert "input contract differs from production v1's (added 'air_density')" in d["reason"]
    assert ctx.registry.alias("wind_power").version == 1
    # The operator's move (what the admin alias route does) still promotes it, and is audited.
    current = ctx.registry.alias("wind_power")
    ctx.registry.move_alias("wind_power", "production", 2, expected=current, event="set_alias",
                            reason="new contract agreed with callers", actor="operator")
    assert ctx.registry.alias("wind_power").version == 2
    assert [e["event"] for e in ctx.registry.audit_log("wind_power")][-2:] == ["reject", "set_alias"]


def test_a_candidate_production_cannot_be_scored_against_is_not_promoted_on_the_floor(ctx, tmp_path):
    _spec(ctx, tmp_path, ALL)
    drop(ctx, "wind_power", "a.parquet", to_parquet(wind(1500, seed=1)))
    drain(ctx)
    _spec(ctx, tmp_path, WITHOUT_DENSITY)  # the candidate's rows lack a column production needs
    drop(ctx, "wind_power", "b.parquet", to_parquet(wind(1500, seed=2)))
    drain(ctx)
    d = _decision(ctx, 2)
    assert not d["promoted"] and d["holdout"]["passed"] and d["holdout"]["production"] is None
    assert "production v1 could not be scored" in d["reason"] and "not promoted on the floor alone" in d["reason"]
    assert d["contract_changes"] == ["removed 'air_density'"]
    assert ctx.registry.alias("wind_power").version == 1


def test_the_same_table_in_another_column_order_is_a_duplicate_run(ctx):
    frame = wind(1000, seed=3)
    first = drop(ctx, "wind_power", "a.csv", to_csv(frame))
    drain(ctx)
    again = drop(ctx, "wind_power", "reordered.csv", to_csv(frame[list(reversed(frame.columns))]))
    assert again.ok and f"duplicate of run {first.run_id}" in again.detail and "column order" in again.detail
    status = ctx.runs.status("wind_power", again.run_id)
    assert status["state"] == "duplicate" and status["duplicate_of"] == first.run_id
    assert drain(ctx) == [] and ctx.registry.versions("wind_power") == [1]
    # Other rows are another training, whatever their column order.
    changed = drop(ctx, "wind_power", "changed.csv", to_csv(frame.iloc[:-1][list(reversed(frame.columns))]))
    assert "duplicate" not in changed.detail
