"""The content-hash split and the exam: a row production trained on never sits in a hold-out or the exam."""
from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.wind_power_data import generate as wind
from shared.core.errors import DatasetError
from shared.core.spec import SpecCatalog
from shared.pipeline import exam
from shared.pipeline.data import read_table, validate
from shared.pipeline.train import ROW_KEY, split
from shared.ports.storage.local import LocalStorage
from tests.conftest import ROOT, to_csv, to_parquet

SPEC = SpecCatalog(ROOT / "models").get("wind_power")
SPEC2 = replace(SPEC, exam=replace(SPEC.exam, recent_datasets=2))  # the exam keeps two datasets
FEATURES = list(SPEC.features)


def typed(df: pd.DataFrame) -> pd.DataFrame:
    return validate(df, SPEC, "a.parquet").frame


def keys_of(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame[FEATURES].astype(object).fillna("NaN").itertuples(index=False, name=None)))


def test_a_row_lands_on_the_same_side_in_every_dataset_and_format():
    a = wind(2000, seed=1)
    b = pd.concat([wind(500, seed=2), a.sample(frac=1.0, random_state=3)], ignore_index=True)  # reordered, extended
    train_a, hold_a = split(typed(a), SPEC)
    from_csv = validate(read_table(to_csv(b), "b.csv"), SPEC, "b.csv").frame
    train_b, hold_b = split(from_csv, SPEC)
    assert keys_of(train_a) <= keys_of(train_b) and keys_of(hold_a) <= keys_of(hold_b)
    assert not keys_of(train_a) & keys_of(hold_b)
    assert 0.17 < len(hold_a) / len(a) < 0.23  # about the spec's hold-out fraction


rows = st.fixed_dictionaries({
    # Few distinct values, so datasets share rows and near-duplicates often.
    "wind_speed": st.sampled_from([0.0, -0.0, 3.5, 7.25, 12.0, float("nan")]),
    "wind_direction": st.sampled_from([0.0, 90.0, 220.5]),
    "air_temperature": st.sampled_from([-3.0, 15.0]),
    "air_density": st.sampled_from([1.2, 1.25]),
    "turbine_id": st.sampled_from(["T01", "T02", "T03", ""]),
    "power_kw": st.floats(0, 3000, allow_nan=False),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(rows, min_size=20, max_size=120),
    rounds=st.lists(st.tuples(st.lists(rows, max_size=60), st.booleans(), st.lists(st.integers(0, 10**6), max_size=20)),
                    min_size=1, max_size=4),
)
def test_under_append_retraining_no_training_row_reaches_a_holdout_or_the_exam(first, rounds):
    """Production trains on a dropped dataset; then rounds of append retraining (the previous
    dataset plus new rows, some copied from production's training rows with other labels) and
    new person-dropped datasets. None of production's training rows is ever held out."""
    with tempfile.TemporaryDirectory() as tmp:
        storage = LocalStorage(Path(tmp))
        dataset = pd.DataFrame(first).assign(power_kw=lambda d: d["power_kw"] + np.arange(len(d)))
        try:
            prod_train, hold = split(dataset, SPEC)
        except DatasetError:  # every row on one side: refused, nothing trained
            assume(False)
        exam.add_holdout(storage, SPEC2, hold, {"dataset": "d0", "sha256": "0", "run_id": "r0"})
        trained = keys_of(prod_train)
        for i, (new_rows, person_drop, copies) in enumerate(rounds):
            fresh = pd.DataFrame(new_rows, columns=[*FEATURES, "power_kw"])
            copied = prod_train.iloc[[c % len(prod_train) for c in copies]].assign(power_kw=0.0)  # forged labels
            dataset = pd.concat([dataset, fresh, copied], ignore_index=True)
            try:
                _, hold = split(dataset, SPEC)
            except DatasetError:
                continue  # refused: no hold-out, no candidate
            assert not keys_of(hold) & trained
            if person_drop:
                exam.add_holdout(storage, SPEC2, hold,
                                 {"dataset": f"d{i + 1}", "sha256": str(i + 1), "run_id": f"r{i}"})
            current = exam.latest(storage, "wind_power")
            assert not keys_of(exam.load(storage, "wind_power", current.record)) & trained


def _holdout(seed: int, n: int = 1000, regime: str = "summer") -> pd.DataFrame:
    return split(typed(wind(n, seed=seed, regime=regime)), SPEC)[1]


def test_the_exam_keeps_the_recent_datasets_deduplicated_and_versioned(tmp_path):
    storage = LocalStorage(tmp_path)
    first = exam.add_holdout(storage, SPEC2, _holdout(1), {"dataset": "a", "sha256": "a", "run_id": "ra"})
    again = exam.add_holdout(storage, SPEC2, _holdout(1), {"dataset": "a2", "sha256": "a", "run_id": "rb"})
    assert again.version == first.version == 1  # the same content adds nothing
    both = exam.add_holdout(storage, SPEC2, pd.concat([_holdout(2), _holdout(1).head(50)]),
                            {"dataset": "b", "sha256": "b", "run_id": "rb"})
    rows = exam.load(storage, "wind_power", both.record)
    assert both.version == 2 and both.rows == len(rows) == first.rows + len(_holdout(2))  # 50 repeated rows count once
    assert [s["dataset"] for s in both.record["sources"]] == ["b", "a"]
    third = exam.add_holdout(storage, SPEC2, _holdout(3), {"dataset": "c", "sha256": "c", "run_id": "rc"})
    assert [s["dataset"] for s in third.record["sources"]] == ["c", "b"]  # the 2 most recent
    # Source "a" aged out; the 50 of its rows that "b" repeated stay, as b's.
    assert third.rows == len(_holdout(3)) + len(_holdout(2)) + 50
    assert ROW_KEY in exam.load(storage, "wind_power", third.record)
    # Versions are immutable: version 1 is still there and still matches its hash.
    assert len(exam.load(storage, "wind_power", exam.get(storage, "wind_power", 1).record)) == first.rows
    # With the spec's default the exam is the newest dataset's hold-out alone.
    newest = exam.add_holdout(storage, SPEC, _holdout(4), {"dataset": "d", "sha256": "d", "run_id": "rd"})
    assert [s["dataset"] for s in newest.record["sources"]] == ["d"] and newest.rows == len(_holdout(4))


def test_a_tampered_exam_is_refused(tmp_path):
    import pytest

    from shared.core.errors import IntegrityError

    storage = LocalStorage(tmp_path)
    v = exam.add_holdout(storage, SPEC, _holdout(1), {"dataset": "a", "sha256": "a", "run_id": "ra"})
    storage.put("exams", v.record["file"], to_parquet(_holdout(2)))
    with pytest.raises(IntegrityError, match="SHA-256"):
        exam.load(storage, "wind_power", v.record)
