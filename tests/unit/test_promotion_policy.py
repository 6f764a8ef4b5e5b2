"""The promotion policy as a pure function: candidate, champion, evidence -> decision with reason."""
from __future__ import annotations

from shared.policies.promotion import Evidence, Rule, SetScores, Version, contract_changes, decide, judge

RMSE = Rule("rmse", higher_is_better=False, floor=250.0, margin=0.02)
SCHEMA = ({"name": "wind_speed", "type": "double"}, {"name": "turbine_id", "type": "string"})


def _evidence(cand: float | None, prod: float | None, *, exam: tuple[float, float] | None = None,
              production_error: str | None = None) -> Evidence:
    sets = [SetScores("holdout", "the candidate's hold-out", 100, 100,
                      None if cand is None else {"rmse": cand}, None if prod is None else {"rmse": prod})]
    if exam is not None:
        sets.append(SetScores("exam", "the exam", 300, 300, {"rmse": exam[0]}, {"rmse": exam[1]}, sources=2))
    return Evidence(tuple(sets), 0.2, None, production_error)


def test_the_first_version_is_judged_on_the_floor_alone():
    yes = decide(RMSE, Version(1, SCHEMA), None, _evidence(200.0, None))
    no = decide(RMSE, Version(1, SCHEMA), None, _evidence(260.0, None))
    assert yes.promoted and yes.reason.startswith("first version: rmse 200 on the candidate's hold-out")
    assert not no.promoted and "does not clear the floor (<= 250)" in no.reason


def test_a_candidate_within_the_margin_of_production_on_every_set_is_promoted():
    d = decide(RMSE, Version(2, SCHEMA), Version(1, SCHEMA), _evidence(101.0, 100.0, exam=(99.0, 100.0)))
    assert d.promoted and d.sets["holdout"]["passed"] and d.sets["exam"]["sources"] == 2
    assert d.contract_changes == ()


def test_a_candidate_worse_on_the_exam_alone_is_not_promoted_and_the_reason_says_so():
    d = decide(RMSE, Version(2, SCHEMA), Version(1, SCHEMA), _evidence(90.0, 100.0, exam=(120.0, 100.0)))
    assert not d.promoted and d.sets["holdout"]["passed"] and not d.sets["exam"]["passed"]
    assert "is worse than production's 100 on the exam" in d.reason


def test_an_unscored_hold_out_never_promotes():
    d = decide(RMSE, Version(2, SCHEMA), Version(1, SCHEMA), _evidence(None, None))
    assert not d.promoted and d.sets["holdout"]["passed"] is None


def test_a_changed_input_contract_is_never_promoted_automatically_and_the_fields_are_named():
    retyped = ({"name": "wind_speed", "type": "string"}, {"name": "turbine", "type": "string"},
               {"name": "gust", "type": "double"})
    d = decide(RMSE, Version(2, retyped), Version(1, SCHEMA), _evidence(50.0, 100.0))
    assert not d.promoted and d.sets["holdout"]["passed"]  # better on the rows, held back by the contract
    assert d.contract_changes == ("removed 'turbine_id'", "added 'turbine'", "added 'gust'",
                                  "retyped 'wind_speed' (double -> string)")
    assert "input contract differs from production v1's" in d.reason and "'turbine_id'" in d.reason
    assert "moving the production alias" in d.reason


def test_a_candidate_production_could_not_be_scored_against_is_not_promoted_on_the_floor_alone():
    d = decide(RMSE, Version(2, SCHEMA), Version(1, SCHEMA),
               _evidence(50.0, None, production_error="production v1 could not be scored: it needs 'x'"))
    assert not d.promoted and d.sets["holdout"]["passed"]  # clears the floor, compared with nothing
    assert "could not be scored" in d.reason and "not promoted on the floor alone" in d.reason


def test_the_current_production_version_is_already_production():
    d = decide(RMSE, Version(3, SCHEMA), Version(3), Evidence(()))
    assert d.promoted and d.reason == "already production" and d.sets == {}


def test_judge_on_a_higher_is_better_metric_and_contracts_that_agree():
    auc = Rule("roc_auc", higher_is_better=True, floor=0.8, margin=0.01)
    assert judge(auc, 0.95, 0.955)[0] and not judge(auc, 0.90, 0.95)[0] and not judge(auc, 0.7, None)[0]
    assert contract_changes(SCHEMA, tuple(reversed(SCHEMA))) == ()


def test_a_candidate_answering_other_classes_is_never_promoted_automatically():
    """Found on the host: wine v1 answered barolo/grignolino/barbera; a dataset whose cultivar
    was coded 0, 1, 2 made v2, which 'beat' production (accuracy 0 on labels it never answers)
    and started a rollout: with rollouts off or direct, every client's labels and probability
    keys would have changed at once."""
    acc = Rule("accuracy", higher_is_better=True, floor=0.8, margin=0.02)
    names, codes = ("barbera", "barolo", "grignolino"), (0, 1, 2)
    ev = Evidence((SetScores("holdout", "the candidate's hold-out", 50, 50, {"accuracy": 0.98},
                             {"accuracy": 0.0}),), 0.2, None, None)
    d = decide(acc, Version(2, SCHEMA, codes), Version(1, SCHEMA, names), ev)
    assert not d.promoted and d.sets["holdout"]["passed"]
    assert "classes differ from production v1's" in d.reason and "'barolo'" in d.reason and "'0'" in d.reason
    assert any("class" in c for c in d.contract_changes)
    # The same classes in another order, or as numbers and their text, are the same outputs.
    same = decide(acc, Version(2, SCHEMA, ("1", "0")), Version(1, SCHEMA, (0, 1)), ev)
    assert same.promoted and same.contract_changes == ()
