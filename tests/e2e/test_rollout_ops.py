"""Operating a rollout through the local host: the rollout API (show, pause, resume, abort,
promote-now, force-start; master key, audited, If-Match), the rules of docs/rollout.md
(one rollout per model, a newer candidate supersedes, retraining deferred, a manual move ends
it), the runs API and the version view, the console's rollout panel in a real browser, and
``mlops rollout``.

The host runs with rollouts on and its own spec copy: a small forest, two steps (shadow, 50%)
and a ``min_rows`` no test reaches, with the evaluator's timer once a year, so a rollout stays
where the test put it (no evaluation writes under an If-Match the test holds).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from models.wind_power_data import generate as wind
from shared.ports.storage.local import LocalStorage
from shared.registry.rollouts import RolloutStore
from shared.registry.store import Registry
from tests.conftest import ROOT, to_parquet
from tests.e2e.hostproc import FKEY, MASTER, MONITOR_ENV, HostProcess, run_monitor, wait_for
from tests.e2e.test_console import browser  # noqa: F401 - the module's Chromium, shared

pytestmark = pytest.mark.e2e

MODEL = "wind_power"
SMALL = "n_estimators = 20, max_depth = 10, min_samples_leaf = 3, n_jobs = 1, random_state = 7"
SPEC = (ROOT / "models" / "wind_power.toml").read_text().replace(
    "n_estimators = 60, max_depth = 14, min_samples_leaf = 3, n_jobs = 1, random_state = 7", SMALL
) + '\n[rollout]\nsteps = ["shadow", 50]\nbake_seconds = 3600\nmin_rows = 1000000\n'
NO_DENSITY = SPEC.replace('numeric = ["wind_speed", "wind_direction", "air_temperature", "air_density"]',
                          'numeric = ["wind_speed", "wind_direction", "air_temperature"]')


class Deployment:
    def __init__(self, host: HostProcess, storage: LocalStorage, root) -> None:
        self.host, self.storage, self.root = host, storage, root
        self.read = httpx.Client(base_url=host.url, headers={"x-functions-key": FKEY}, timeout=30)
        self.admin = httpx.Client(base_url=host.url, headers={"x-functions-key": MASTER}, timeout=30)
        self.registry = Registry(storage)
        self.drops = 0

    def rollout(self):
        stored = RolloutStore(self.storage).read(MODEL)
        return stored.state if stored is not None else None

    def candidate(self, rows: int, *, spec: str = SPEC) -> int:
        """Drop a dataset that makes the next version; wait until it is decided. Returns it."""
        (self.root / "models" / f"{MODEL}.toml").write_text(spec)
        version = len(self.registry.versions(MODEL)) + 1
        self.drops += 1
        self.storage.put("datasets", f"{MODEL}/d{self.drops}.parquet", to_parquet(wind(rows, seed=self.drops)))
        wait_for(lambda: self.registry.is_decided(MODEL, version), 120, f"v{version} decided", self.host)
        return version

    def live(self) -> int:
        """The candidate of a live rollout, making one if none is live."""
        state = self.rollout()
        if state is not None and state.live:
            return state.candidate
        version = self.candidate(4000 + 500 * self.drops)
        state = self.rollout()
        assert state is not None and state.candidate == version and state.live, self.registry.decision(MODEL, version)
        return version

    def act(self, action: str, body: dict | None = None, etag: str | None = None) -> httpx.Response:
        return self.admin.post(f"/api/models/{MODEL}/rollout/{action}", json=body or {},
                               headers={"if-match": etag} if etag else {})

    def audit(self) -> list[dict]:
        return self.read.get(f"/api/models/{MODEL}").json()["audit"]

    def run_of(self, version: int) -> dict:
        [run] = [r for r in self.read.get(f"/api/models/{MODEL}/runs").json()["runs"] if r["version"] == version]
        return run


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A host with rollouts on, wind_power v1 in production, breast_cancer's spec and no data."""
    root = tmp_path_factory.mktemp("rolloutops")
    models = root / "models"
    models.mkdir()
    (models / f"{MODEL}.toml").write_text(SPEC)
    (models / "breast_cancer.toml").write_text((ROOT / "models" / "breast_cancer.toml").read_text())
    host = HostProcess(root / "data", env={**MONITOR_ENV, "MLOPS_MODELS_DIR": str(models), "MLOPS_ROLLOUT": "on",
                                           "MLOPS_ROLLOUT_SCHEDULE": "0 0 0 1 1 *"}).start()
    d = Deployment(host, LocalStorage(root / "data" / "blobs"), root)
    d.candidate(3000)
    assert d.registry.alias(MODEL).version == 1
    try:
        yield d
    finally:
        host.stop()


def test_the_api_shows_and_controls_a_rollout_and_keeps_its_rules(deployment):
    d = deployment
    assert d.read.get("/api/models/breast_cancer/rollout").status_code == 404
    missing = d.read.get("/api/models/breast_cancer/rollout").json()["error"]
    assert missing["code"] == "NOT_FOUND" and "'breast_cancer' has no rollout" in missing["message"]
    assert d.read.get("/api/models/nope/rollout").json()["error"]["code"] == "MODEL_NOT_FOUND"

    v2 = d.live()
    assert httpx.get(f"{d.host.url}/api/models/{MODEL}/rollout").status_code == 401
    resp = d.read.get(f"/api/models/{MODEL}/rollout")
    ro = resp.json()
    assert resp.headers["etag"] == ro["etag"]
    assert (ro["candidate"], ro["champion"], ro["status"], ro["mode"]) == (v2, 1, "active", "canary")
    assert ro["step"] == {"index": 0, "number": 1, "of": 2, "label": "shadow", "started_at": ro["step"]["started_at"]}
    assert ro["steps"] == ["shadow", "50%"] and ro["traffic"]["shadow"] is True
    assert ro["traffic"]["production_percent"] == 100.0 and ro["actions"] == ["pause", "abort", "promote-now"]
    guards = {g["name"]: g for g in ro["guardrails"]}
    assert set(guards) == {"error_rate", "latency_ratio", "divergence", "output_psi", "live_metric"}
    assert guards["latency_ratio"]["threshold"] == 1.5 and guards["latency_ratio"]["figure"] is None
    assert [h["action"] for h in ro["history"]] == ["start"]

    # Operator actions: the master key only; audited with the actor and reason; If-Match.
    assert d.read.post(f"/api/models/{MODEL}/rollout/pause", json={}).status_code == 401
    first = ro["etag"]
    paused = d.act("pause", {"reason": "weekend freeze", "actor": "alice"}, etag=first)
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused" and paused.json()["actions"] == ["resume", "abort", "promote-now"]
    entry = d.audit()[-1]
    assert entry["event"] == "rollout_pause" and entry["actor"] == "alice" and "weekend freeze" in entry["reason"]
    again = d.act("pause", {"reason": "twice"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "CONFLICT"
    assert "it is paused" in again.json()["error"]["message"]
    stale = d.act("resume", {"reason": "stale"}, etag=first)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "PRECONDITION_FAILED"
    assert f"changed since it was read: it is now v{v2} paused at step 1 of 2" in stale.json()["error"]["message"]
    assert d.act("resume", {"reason": "back"}, etag=paused.json()["etag"]).json()["status"] == "active"
    assert d.act("explode").status_code == 400
    assert d.act("pause", {"reason": 5}).json()["error"]["message"].startswith("field 'reason'")

    # The runs API and the version view show the rollout and its history.
    run = d.run_of(v2)
    assert run["outcome"] == "rollout" and "in rollout" in run["explanation"]
    assert run["rollout"]["summary"] == f"v{v2} active at step 1 of 2 (shadow)"
    assert d.read.get(f"/api/models/{MODEL}/runs", params={"outcome": "rollout"}).json()["runs"][0]["version"] == v2
    lineage = d.read.get(f"/api/models/{MODEL}/versions/{v2}").json()
    assert [h["action"] for h in lineage["rollout"]["history"]] == ["start", "pause", "resume"]
    assert d.read.get(f"/api/models/{MODEL}/versions/1").json()["rollout"] is None

    # Retraining is deferred while the rollout is live: a drifted window asks for none.
    winter = wind(600, seed=40, regime="winter").drop(columns="power_kw").to_dict("records")
    assert d.read.post(f"/api/models/{MODEL}/predict", json={"instances": winter}).status_code == 200
    run_monitor(d.host, d.storage, [MODEL])
    report = d.read.get(f"/api/models/{MODEL}/monitoring/latest").json()
    assert report["verdict"] in ("drift", "degraded"), report["verdict"]
    assert report["retraining"]["requested"] is False
    assert report["retraining"]["reason"].startswith(f"deferred: v{v2} is in rollout (active, step 1 of 2)")

    # One rollout per model: a newer candidate supersedes the one in rollout.
    v3 = d.candidate(5000)
    ro = d.read.get(f"/api/models/{MODEL}/rollout").json()
    assert (ro["candidate"], ro["champion"], ro["status"]) == (v3, 1, "active")
    assert d.run_of(v2)["outcome"] == "superseded"
    older = d.read.get(f"/api/models/{MODEL}/versions/{v2}").json()["rollout"]
    assert older["status"] == "superseded" and older["history"][-1]["action"] == "superseded"
    assert f"superseded by v{v3}" in older["reason"]
    refused = d.act("start", {"version": v2, "reason": "again"})
    assert refused.status_code == 409  # an older candidate never replaces a newer one
    assert f"v{v2} was not rolled out: v{v3}, a newer candidate, is in rollout" in refused.json()["error"]["message"]

    # A manual promote mid-rollout ends the rollout at once, saying who moved production where.
    moved = d.admin.put(f"/api/models/{MODEL}/aliases/production", json={"version": v3, "reason": "by hand"})
    assert moved.status_code == 200, moved.text
    ro = d.read.get(f"/api/models/{MODEL}/rollout").json()
    assert ro["status"] == "aborted" and ro["actions"] == [] and ro["traffic"]["candidate_percent"] == 0
    assert f"ended by the operator: production was moved to v{v3} by operator mid-rollout" in ro["reason"]
    assert d.run_of(v3)["outcome"] == "aborted"
    assert d.act("abort").status_code == 409

    # A candidate held for its input contract starts only by an operator's audited start.
    try:
        v4 = d.candidate(4000, spec=NO_DENSITY)
        decision = d.registry.decision(MODEL, v4)
        assert decision["promoted"] is False and "air_density" in decision["reason"]
        assert d.rollout().candidate == v3
        started = d.act("start", {"version": v4, "reason": "clients migrated", "actor": "bob"})
        assert started.status_code == 200, started.text
        ro = started.json()
        assert (ro["candidate"], ro["champion"], ro["status"]) == (v4, v3, "active")
        assert "input contract changes accepted by bob: removes 'air_density'" in ro["reason"]
        assert "started by bob: clients migrated" in ro["reason"]
        assert d.audit()[-1]["event"] == "rollout_started" and d.audit()[-1]["actor"] == "bob"
        assert d.run_of(v4)["outcome"] == "rollout"
        aborted = d.act("abort", {"reason": "not yet"})
        assert aborted.json()["status"] == "aborted" and d.registry.alias(MODEL).version == v3
    finally:
        (d.root / "models" / f"{MODEL}.toml").write_text(SPEC)


def test_the_console_shows_the_rollout_and_pauses_it_behind_the_confirmation(deployment, browser):  # noqa: F811
    d = deployment
    candidate = d.live()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{d.host.url}/api/console")
    page.fill("#key", FKEY)
    page.click("#key-form button")
    page.wait_for_selector(f"#models tr[data-model='{MODEL}'] td.rollout .badge")
    assert f"v{candidate} active" in page.inner_text(f"#models tr[data-model='{MODEL}'] td.rollout")
    page.click(f"#models tr[data-model='{MODEL}']")
    page.wait_for_selector("#rollout-summary")
    assert f"v{candidate} against production" in page.inner_text("#rollout-summary")
    assert page.inner_text("#rollout ol.steps li.current") == "shadow"
    assert "shadowed on the same rows" in page.inner_text("#rollout-split")
    assert page.inner_text("#guardrails tr[data-guardrail='latency_ratio'] td.threshold") == "1.500"
    assert page.locator("#rollout-history tbody tr").count() >= 1

    # The confirmation step first: cancel changes nothing.
    page.click("#rollout-actions button[data-action='pause']")
    page.wait_for_selector("#confirm[open]")
    assert "Hold the rollout" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    assert d.rollout().status == "active"
    page.click("#rollout-actions button[data-action='pause']")
    page.fill("#confirm-reason", "checking T03 first")
    page.fill("#confirm-key", MASTER)
    page.click("#confirm-ok")
    page.wait_for_selector("#status:has-text('rollout of wind_power: paused')")
    assert d.rollout().status == "paused"
    page.wait_for_selector("#rollout-actions button[data-action='resume']")
    assert "pause" in page.inner_text("#rollout-history tbody tr:first-child")
    entry = d.audit()[-1]
    assert entry["event"] == "rollout_pause" and entry["actor"] == "console"
    assert "checking T03 first" in entry["reason"]
    page.close()


def mlops(d: Deployment, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLOPS_URL": d.host.url, "MLOPS_KEY": FKEY, "MLOPS_MASTER_KEY": MASTER,
           "MLOPS_CONFIG": str(d.root / "no-profile.toml"), "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "mlops", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_mlops_rollout_shows_and_promotes_now_with_the_documented_exit_codes(deployment):
    d = deployment
    candidate = d.live()
    shown = mlops(d, "rollout", MODEL, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["candidate"] == candidate
    plain = mlops(d, "rollout", MODEL)
    assert plain.returncode == 0 and "guardrails" in plain.stdout and "latency_ratio" in plain.stdout
    assert f"v{candidate} against production" in plain.stdout and "traffic: production 100%" in plain.stdout

    out = mlops(d, "rollout", MODEL, "promote-now")  # no terminal, no --yes: refused, nothing moves
    assert out.returncode == 2 and "--yes" in out.stderr and d.rollout().live
    assert mlops(d, "rollout", MODEL, "start").returncode == 2  # start needs --version
    out = mlops(d, "rollout", MODEL, "promote-now", "--yes", "--reason", "cli test")
    assert out.returncode == 0, out.stderr
    assert d.registry.alias(MODEL).version == candidate and d.rollout().status == "promoted"
    assert d.audit()[-1]["actor"] == "mlops" and d.run_of(candidate)["outcome"] == "promoted"
    out = mlops(d, "rollout", MODEL, "pause", "--yes")
    assert out.returncode == 1 and "it is promoted" in out.stderr and "409" in out.stderr
    assert mlops(d, "rollout", "breast_cancer").returncode == 4
