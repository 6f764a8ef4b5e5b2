"""Settings: every field names its app setting and describes itself; nothing copies the environment."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import fields

import pytest

from shared.core.settings import Settings
from tests.conftest import ROOT


def _hook():
    spec = importlib.util.spec_from_file_location("settings_md", ROOT / "docs" / "hooks" / "settings_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_a_description_and_the_variable_that_sets_it_for_the_generated_table():
    rows = _hook().rows()
    assert [r.field for r in rows] == [f.name for f in fields(Settings)]
    assert [r.field for r in rows if not r.description or not r.env] == []


def test_every_mlops_setting_is_listed_in_the_example_settings():
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    missing = [env for r in _hook().rows() for env in r.env if env.startswith("MLOPS_") and env not in example]
    assert missing == []


def test_the_environment_is_not_copied_into_the_settings():
    secret = "Endpoint=sb://x/;SharedAccessKey=not-for-settings"
    settings = Settings.from_env({"SOME_OTHER_CONNECTION": secret, "MLOPS_FIT_PRIORITY": "low"})
    assert settings.fit_priority == "low"
    assert not hasattr(settings, "extra")
    assert secret not in repr(settings)


@pytest.mark.parametrize("key,value", [("MLOPS_FIT_ISOLATION", "thread"), ("MLOPS_FIT_PRIORITY", "high"),
                                       ("MLOPS_FIT_YIELD", "most")])
def test_a_nonsense_pipeline_setting_fails_loudly_naming_it(key, value):
    with pytest.raises(ValueError, match=key):
        Settings.from_env({key: value})


def test_the_fit_yield_is_clamped_to_a_share_that_leaves_the_stage_running():
    assert Settings.from_env({"MLOPS_FIT_YIELD": "2"}).fit_yield == 0.95
    assert Settings.from_env({"MLOPS_FIT_YIELD": "-1"}).fit_yield == 0.0
