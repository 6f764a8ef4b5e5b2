"""Per-function keys on the local host: a function with keys of its own opens only to them."""
from __future__ import annotations

import pytest

from devhost.config import parse_key_table
from devhost.http import HttpApp


def test_the_key_table_parses_and_refuses_nonsense():
    assert parse_key_table("") == {}
    assert parse_key_table("feedback=a, b ; other=c") == {"feedback": ("a", "b"), "other": ("c",)}
    for bad in ("feedback", "=a", "feedback="):
        with pytest.raises(ValueError, match="MLOPS_HOST_FUNCTION_KEYS_BY_FUNCTION"):
            parse_key_table(bad)


def test_the_predict_key_does_not_open_a_function_with_its_own_key():
    app = HttpApp([], invoker=None, master_key="master", function_keys=("predict-key",),
                  per_function_keys={"feedback": ("feedback-key",)})
    assert app._authorized("FUNCTION", b"predict-key", "predict")
    assert not app._authorized("FUNCTION", b"predict-key", "feedback")
    assert app._authorized("FUNCTION", b"feedback-key", "feedback")
    assert not app._authorized("FUNCTION", b"feedback-key", "predict")  # a feedback key predicts nothing
    assert app._authorized("FUNCTION", b"master", "feedback")
    assert not app._authorized("FUNCTION", None, "feedback")
    app.executor.shutdown()
