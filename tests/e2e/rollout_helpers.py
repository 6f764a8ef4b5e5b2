"""What the rollout tests through the host share: spec copies of wind-power with a small forest
and their own ``[rollout]``, a host with short rollout settings (restartable in place), and
rows to send."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from models.wind_power_data import generate as wind
from shared.ports.storage.local import LocalStorage
from shared.registry.rollouts import RolloutState, RolloutStore
from shared.registry.store import Registry
from tests.conftest import ROOT, to_parquet
from tests.e2e.hostproc import HostProcess, wait_for

SMALL = "n_estimators = 20, max_depth = 10, min_samples_leaf = 3, n_jobs = 1, random_state = 7"
SHIPPED = "n_estimators = 60, max_depth = 14, min_samples_leaf = 3, n_jobs = 1, random_state = 7"
FLUSH = 0.3
ALIAS_CHECK = 0.2


def spec_text(model: str, rollout: str, params: str = SMALL) -> str:
    """The shipped wind-power spec under ``model``, its forest ``params``, with ``rollout`` as its
    ``[rollout]`` table."""
    text = (ROOT / "models" / "wind_power.toml").read_text()
    text = text.replace('name = "wind_power"', f'name = "{model}"').replace(SHIPPED, params)
    return text + "\n[rollout]\n" + rollout


class Host:
    """A module's host, restartable in place on the same data folder: rollouts on, the evaluator
    every second, the inference log flushed every ``FLUSH`` seconds, the monitor once a year."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"MLOPS_MODELS_DIR": str(root / "models"), "MLOPS_ROLLOUT": "on",
                    "MLOPS_ROLLOUT_SCHEDULE": "*/1 * * * * *", "MLOPS_INFERENCE_LOG_FLUSH_SECONDS": str(FLUSH),
                    "MLOPS_ALIAS_CHECK_SECONDS": str(ALIAS_CHECK), "MLOPS_MONITOR_SCHEDULE": "0 0 0 1 1 *"}
        self.proc = HostProcess(root / "data", env=self.env, args=["--quiet-http"]).start()
        self.storage = LocalStorage(root / "data" / "blobs")
        self.registry = Registry(self.storage)

    @property
    def url(self) -> str:
        return self.proc.url

    def restart(self) -> None:
        self.proc.stop()
        self.proc = HostProcess(self.root / "data", env=self.env, args=["--quiet-http"]).start()

    def state(self, model: str) -> RolloutState | None:
        return RolloutStore(self.storage).read_if_changed(model, None)[1]

    def wait_state(self, model: str, what: str, predicate, timeout: float = 90) -> RolloutState:
        return wait_for(lambda: (s := self.state(model)) is not None and predicate(s) and s, timeout, what, self.proc)

    def drop(self, model: str, name: str, frame: pd.DataFrame) -> None:
        self.storage.put("datasets", f"{model}/{name}", to_parquet(frame))


def serving(root: Path, rollouts: dict[str, str]) -> Iterator[Host]:
    """A host whose models (``rollouts``: model -> its ``[rollout]`` table) each have version 1
    in production, trained from a summer dataset of its own; stopped after the module."""
    (root / "models").mkdir()
    for model, rollout in rollouts.items():
        (root / "models" / f"{model}.toml").write_text(spec_text(model, rollout))
    h = Host(root)
    try:
        for i, model in enumerate(rollouts):
            h.drop(model, "summer.parquet", wind(3000, seed=1 + i))
        for model in rollouts:
            wait_for(lambda m=model: h.registry.alias(m), 120, f"{model} v1 in production", h.proc)
        yield h
    finally:
        h.proc.stop()


def rows(n: int, seed: int) -> list[dict]:
    """``n`` wind-power request rows (no label)."""
    return wind(n, seed=seed).drop(columns="power_kw").to_dict("records")
