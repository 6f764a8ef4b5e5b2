"""The model console in a real browser: Debian's headless Chromium driven by Playwright,
against the local host serving the app over loopback."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from models.breast_cancer_data import generate as cancer
from models.wind_power_data import generate as wind
from shared.ports.storage.local import LocalStorage
from shared.registry.store import Registry
from tests.conftest import ROOT, copy_example_specs, to_parquet
from tests.e2e.hostproc import FKEY, MASTER, MONITOR_ENV, HostProcess, run_monitor, wait_for

pytestmark = pytest.mark.e2e

# The browser .ci/chromium finds or installs (`make test` runs it): $MLOPS_CHROMIUM, else chromium on PATH.
CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium")
# Set MLOPS_CONSOLE_SCREENSHOTS=docs to refresh the screenshots the README and docs/ show.
SHOTS = os.environ.get("MLOPS_CONSOLE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/chromium (`make test` does) to install Debian's chromium, "
                    "or set MLOPS_CHROMIUM to a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The host with both examples dropped, and a third model whose run fails at the parity gate."""
    root = tmp_path_factory.mktemp("console")
    specs = root / "specs"
    specs.mkdir()
    copy_example_specs(specs)
    text = (ROOT / "models" / "wind_power.toml").read_text().replace('name = "wind_power"', 'name = "wind_hgb"')
    text = text.replace('class = "RandomForestRegressor"',
                        'class = "HistGradientBoostingRegressor"\nscale_numeric = true')
    text = text.replace(
        "params = { n_estimators = 60, max_depth = 14, min_samples_leaf = 3, n_jobs = 1, random_state = 7 }",
        "params = { max_iter = 50, random_state = 7 }")
    (specs / "wind_hgb.toml").write_text(text)
    data = root / "data"
    server = HostProcess(data, env={
        "MLOPS_MODELS_DIR": str(specs),
        **MONITOR_ENV,
    }, args=["--drop-examples"]).start()
    storage = LocalStorage(data / "blobs")
    storage.put("datasets", "wind_hgb/w.parquet", to_parquet(wind(3000, seed=7)))
    registry = Registry(storage)
    wait_for(lambda: registry.alias("wind_power") and registry.alias("breast_cancer"), 120, "both examples", server)
    # A second wind_power version made production by an operator, so the console can roll back.
    storage.put("datasets", "wind_power/more.parquet", to_parquet(wind(6000, seed=12)))
    wait_for(lambda: registry.is_decided("wind_power", 2), 120, "wind_power v2 decided", server)
    wait_for(lambda: storage.list("runs", "wind_hgb/"), 60, "the wind_hgb run", server)
    resp = httpx.put(f"{server.url}/api/models/wind_power/aliases/production", headers={"x-functions-key": MASTER},
                     json={"version": 2, "reason": "set up for the console test"})
    assert resp.status_code == 200, resp.text
    # Two monitoring runs on real traffic, so the console has a history to chart.
    client = httpx.Client(base_url=server.url, headers={"x-functions-key": FKEY}, timeout=30)
    rows = cancer().drop(columns="target")
    for seed in (1, 2):
        sample = rows.sample(150, random_state=seed, replace=True).to_dict("records")
        assert client.post("/api/models/breast_cancer/predict", json={"instances": sample}).status_code == 200
        run_monitor(server, storage, ["breast_cancer"])
        assert _reports(client) == seed
    yield server, storage
    server.stop()


def _reports(client: httpx.Client) -> int:
    resp = client.get("/api/models/breast_cancer/monitoring/reports")
    return len(resp.json()["reports"]) if resp.status_code == 200 else 0


def _shot(page, name: str) -> None:
    if SHOTS:
        page.screenshot(path=str(ROOT / SHOTS / name), full_page=True)


def test_the_console_shows_models_failures_and_performs_a_rollback(browser, host):
    server, storage = host
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{server.url}/api/console")

    # A wrong key is refused visibly; the right one loads the overview.
    page.fill("#key", "not-a-key")
    page.click("#key-form button")
    page.wait_for_selector("#status:has-text('key refused')")
    page.fill("#key", FKEY)
    page.click("#key-form button")
    page.wait_for_selector("#models tr[data-model='breast_cancer']")
    assert page.inner_text("#models tr[data-model='wind_power'] td.production") == "v2"
    assert page.inner_text("#models tr[data-model='breast_cancer'] td.production") == "v1"
    assert page.inner_text("#models tr[data-model='wind_hgb'] td.production") == "none"
    _shot(page, "console-overview.png")

    # The failed run says where and why it failed.
    page.click("#models tr[data-model='wind_hgb']")
    page.wait_for_selector("#runs tbody tr")
    explanation = page.inner_text("#runs tbody tr td.explanation")
    assert "failed at convert" in explanation and "disagree" in explanation
    page.click("#runs tbody tr")
    page.wait_for_selector("#run td.error")
    assert "PARITY_FAILED" in page.inner_text("#run td.error")
    _shot(page, "console-failed-run.png")

    # The monitoring history: a chart in wall-clock time with a line, and each report one click away.
    page.click("#models tr[data-model='breast_cancer']")
    # attached, not visible: two runs with no drifted feature draw a flat line, which has no height
    line = page.wait_for_selector("#drift-chart polyline", state="attached")
    assert len(line.get_attribute("points").split()) == 2
    assert page.locator("#reports tbody tr").count() == 2
    # Each run's headline beside its verdict: how many features drifted, of how many.
    assert "features drifted" in page.inner_text("#reports tbody tr:first-child")
    assert "features drifted" in page.inner_text("#models tr[data-model='breast_cancer']")
    page.click("#reports tbody tr:first-child a.report-link")
    frame = page.frame_locator("#report-frame")
    frame.locator("text=breast_cancer").first.wait_for()
    _shot(page, "console-monitoring.png")

    # Rollback: the confirmation step first (cancel changes nothing), then with the master key.
    page.click("#models tr[data-model='wind_power']")
    page.wait_for_selector("#versions tr[data-version='1'] button.move")
    assert "Roll back to v1" in page.inner_text("#versions tr[data-version='1'] button.move")
    assert page.locator("#decisions tbody tr").count() == 2
    page.click("#versions tr[data-version='1'] button.move")
    page.wait_for_selector("#confirm[open]")
    assert "from v2 to v1" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    assert Registry(storage).alias("wind_power").version == 2

    page.click("#versions tr[data-version='1'] button.move")
    page.fill("#confirm-reason", "v2 answers oddly for T03")
    page.fill("#confirm-key", MASTER)
    _shot(page, "console-rollback.png")
    page.click("#confirm-ok")
    page.wait_for_selector("#status:has-text('production of wind_power is now v1')")
    assert Registry(storage).alias("wind_power").version == 1
    page.wait_for_selector("#audit tbody tr")
    assert "rollback" in page.inner_text("#audit tbody tr:first-child")
    audit = httpx.get(f"{server.url}/api/models/wind_power", headers={"x-functions-key": FKEY}).json()["audit"]
    assert audit[-1]["event"] == "rollback" and audit[-1]["reason"] == "v2 answers oddly for T03"

    # Keys never travel in a URL, the page reaches nothing but this host, and the log holds no key.
    assert requests and all(u.startswith(server.url) for u in requests)
    assert not any(FKEY in u or MASTER in u or "code=" in u for u in requests)
    log = server.log()
    assert FKEY not in log and MASTER not in log
    page.close()


def test_the_runs_api_lists_outcomes_and_the_503_names_the_latest_run(host):
    server, _ = host
    client = httpx.Client(base_url=server.url, headers={"x-functions-key": FKEY}, timeout=10)
    runs = client.get("/api/models/wind_hgb/runs").json()["runs"]
    assert [r["outcome"] for r in runs] == ["failed"]
    detail = client.get(f"/api/models/wind_hgb/runs/{runs[0]['run_id']}").json()
    assert detail["error"]["stage"] == "convert" and detail["parity"]["over_tolerance"] > 0
    assert detail["dataset"]["rows"] == 3000
    resp = client.post("/api/models/wind_hgb/predict", json={"instances": [{"wind_speed": 9.0}]})
    assert resp.status_code == 503
    assert f"run {runs[0]['run_id']} failed at convert" in resp.json()["error"]["message"]
    assert client.get("/api/models/wind_power/runs", params={"outcome": "promoted"}).json()["runs"]
    assert client.get("/api/models/wind_power/runs", params={"outcome": "nope"}).status_code == 400
    assert client.get("/api/models/wind_power/runs/0123456789abcdef").status_code == 404
    assert httpx.get(f"{server.url}/api/models/wind_power/runs").status_code == 401
    lineage = client.get("/api/models/wind_power/versions/1").json()
    assert lineage["dataset"]["name"].startswith("datasets/wind_power/") and len(lineage["dataset"]["sha256"]) == 64
    assert lineage["decision"]["promoted"] is True
    assert lineage["run"] == f"/api/models/wind_power/runs/{lineage['run_id']}"
    assert client.get("/api/models/wind_power/versions/99").status_code == 404
