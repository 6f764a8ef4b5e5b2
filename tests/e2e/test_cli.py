"""The ``mlops`` command through the local host, as a user runs it: a subprocess per verb,
on data the repo does not ship (scikit-learn's wine with its real column names), with its own
models folder. init -> drop --watch -> predict -> promote -> rollback -> monitor --run; init on
each bundled tabular dataset; a bad dataset makes watch exit 3 with the quarantine reason; the
live display under a pseudo-terminal and plain lines without one."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.client import MlopsClient
from shared.core.spec import parse_spec
from tests.conftest import ROOT
from tests.e2e.hostproc import FKEY, MASTER, MONITOR_ENV, MONITOR_FLUSH_SECONDS, HostProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """A host on its own data and models folders, and the environment the command reads."""
    root = tmp_path_factory.mktemp("cli")
    models = root / "models"
    models.mkdir()
    host = HostProcess(root / "data", env={**MONITOR_ENV, "MLOPS_MODELS_DIR": str(models)}).start()
    env = {**os.environ, "MLOPS_URL": host.url, "MLOPS_KEY": FKEY, "MLOPS_MASTER_KEY": MASTER,
           "MLOPS_MODELS_DIR": str(models), "MLOPS_DATA_DIR": str(root / "data"),
           "MLOPS_CONFIG": str(root / "no-profile.toml"), "PYTHONPATH": str(ROOT), "COLUMNS": "160"}
    try:
        yield host, env, root
    finally:
        host.stop()


def mlops(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def wine_frame() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame.rename(columns={"target": "cultivar"})


def test_wine_goes_from_a_file_to_served_predictions_promotion_rollback_and_a_verdict(deployment, diabetes_run):
    host, env, root = deployment  # diabetes_run: started now, judged by its own test below
    frame = wine_frame()
    assert "od280/od315_of_diluted_wines" in frame.columns  # a real name, slash included
    frame.to_csv(root / "wine.csv", index=False)

    out = mlops(env, "init", str(root / "wine.csv"), "--target", "cultivar")
    assert out.returncode == 0, out.stderr
    spec = parse_spec((root / "models" / "wine.toml").read_text(), "models/wine.toml", expected_name="wine")
    assert (spec.task, spec.metric, len(spec.numeric)) == ("multiclass", "accuracy", 13)
    assert "5-fold CV" in out.stdout and "floor" in out.stdout

    out = mlops(env, "drop", str(root / "wine.csv"), "--model", "wine", "--watch")
    assert out.returncode == 0, out.stdout + out.stderr + host.log()[-3000:]
    for stage in ("validate", "train", "convert", "register", "promote", "serve"):
        assert f"{stage:<9} done" in out.stdout, out.stdout
    assert "served: wine version 1 answers" in out.stdout

    rows = frame.drop(columns="cultivar").sample(300, replace=True, random_state=0).reset_index(drop=True)
    rows.to_parquet(root / "rows.parquet")
    out = mlops(env, "predict", "wine", "--file", str(root / "rows.parquet"), "--out", str(root / "pred.csv"),
                "--batch-size", "128")
    assert out.returncode == 0, out.stderr
    pred = pd.read_csv(root / "pred.csv")
    assert len(pred) == 300 and set(pred["version"]) == {1}
    # the binary v2 path answers as this API's JSON predict does, row for row
    with MlopsClient(host.url, key=FKEY) as client:
        records = json.loads(rows.head(20).to_json(orient="records"))
        served = client.predict("wine", records)["predictions"]
    assert pred["label"].head(20).tolist() == [p["label"] for p in served]
    np.testing.assert_allclose(pred[["probability_0", "probability_1", "probability_2"]].head(20).to_numpy(),
                               [[p["probabilities"][c] for c in ("0", "1", "2")] for p in served], rtol=0, atol=1e-6)

    # a second dataset (the same rows, reversed, as Parquet) registers version 2
    frame.iloc[::-1].to_parquet(root / "wine2.parquet")
    out = mlops(env, "drop", str(root / "wine2.parquet"), "--model", "wine", "--watch", "--json")
    assert out.returncode in (0, 3), out.stderr
    assert json.loads(out.stdout)["version"] == 2

    out = mlops(env, "promote", "wine", "2")  # no terminal, no --yes: refused, nothing moves
    assert out.returncode == 2 and "--yes" in out.stderr
    out = mlops(env, "promote", "wine", "2", "--yes", "--reason", "cli test")
    assert out.returncode == 0, out.stderr
    out = mlops(env, "rollback", "wine", "1", "--yes")
    assert out.returncode == 0, out.stderr
    assert "production 2 -> 1" in out.stdout
    shown = json.loads(mlops(env, "show", "wine", "--json").stdout)
    assert shown["aliases"]["production"] == 1
    # version 2 was in rollout (rollouts are on): the manual promote ended it, then the rollback
    events = [a["event"] for a in shown["audit"]]
    assert events[-3:] == ["set_alias", "rollout_ended", "rollback"], events
    assert json.loads(mlops(env, "show", "wine", "1", "--json").stdout)["classes"] == [0, 1, 2]

    mlops(env, "predict", "wine", "--file", str(root / "rows.parquet"), "--out", str(root / "pred2.csv"))
    settle = f"{2 * MONITOR_FLUSH_SECONDS + 1.2:g}"
    out = mlops(env, "monitor", "wine", "--run", "--settle", settle, "--json")
    assert out.returncode in (0, 3), out.stderr
    verdict = json.loads(out.stdout)
    assert verdict["rows"] >= 300 and verdict["verdict"] in ("ok", "drift", "degraded")
    assert out.returncode == (3 if verdict["verdict"] != "ok" else 0)

    listed = json.loads(mlops(env, "runs", "wine", "--json").stdout)
    assert [r["outcome"] for r in listed][-1] == "promoted" and len(listed) == 2
    assert mlops(env, "show", "wine", "9").returncode == 4
    out = mlops({**env, "MLOPS_KEY": "wrong"}, "models")
    assert out.returncode == 5 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes", "digits", "linnerud"])
def test_init_writes_a_spec_the_pipeline_accepts_for_each_bundled_tabular_dataset(name, tmp_path):
    from sklearn import datasets

    from mlops.cli import main

    loaded = getattr(datasets, f"load_{name}")(as_frame=True)
    frame = loaded.frame
    target = "Weight" if name == "linnerud" else "target"
    if name == "linnerud":  # three targets: keep one, the others are not features
        frame = frame.drop(columns=["Waist", "Pulse"])
    path = tmp_path / (f"{name}.parquet" if name in ("iris", "diabetes") else f"{name}.csv")
    frame.to_parquet(path) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    assert main(["--models-dir", str(tmp_path / "models"), "init", str(path), "--target", target, "--json"]) == 0
    text = (tmp_path / "models" / f"{name}.toml").read_text()
    spec = parse_spec(text, f"models/{name}.toml", expected_name=name)
    from shared.pipeline.data import read_table, validate

    validate(read_table(path.read_bytes(), path.name), spec, path.name)
    expected = {"diabetes": "regression", "linnerud": "regression", "breast_cancer": "binary"}.get(name, "multiclass")
    assert spec.task == expected


@pytest.fixture(scope="module")
def diabetes_run(deployment):
    """``mlops init`` then ``mlops drop --watch`` of diabetes, started in the background: its fit
    overlaps wine's (the host runs two blobs at once), which keeps this module's time down."""
    host, env, root = deployment
    from sklearn.datasets import load_diabetes

    load_diabetes(as_frame=True).frame.to_parquet(root / "diabetes.parquet")
    init = mlops(env, "init", str(root / "diabetes.parquet"), "--target", "target")
    proc = subprocess.Popen([sys.executable, "-m", "mlops", "drop", str(root / "diabetes.parquet"), "--model",
                             "diabetes", "--watch", "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield init, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_diabetes_from_init_trains_and_promotes_through_the_host(diabetes_run):
    init, proc = diabetes_run
    assert init.returncode == 0, init.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert json.loads(out)["outcome"] == "served"


def _bad_wine(root: Path, name: str) -> Path:
    path = root / name
    wine_frame().drop(columns="proline").to_csv(path, index=False)
    return path


def test_a_bad_dataset_makes_watch_exit_3_with_the_quarantine_reason_in_plain_lines(deployment):
    host, env, root = deployment
    if not (root / "models" / "wine.toml").exists():
        wine_frame().to_csv(root / "wine.csv", index=False)
        assert mlops(env, "init", str(root / "wine.csv"), "--target", "cultivar").returncode == 0
    out = mlops(env, "drop", str(_bad_wine(root, "no-proline.csv")), "--model", "wine", "--watch")
    assert out.returncode == 3, out.stdout + out.stderr
    assert "validate  failed" in out.stdout  # plain lines: no terminal
    assert "\x1b[" not in out.stdout
    assert "quarantined" in out.stderr and "missing column(s) 'proline'" in out.stderr
    quarantined = json.loads(mlops(env, "quarantine", "--json").stdout)
    assert any(r["dataset"] == "datasets/wine/no-proline.csv" for r in quarantined)


def test_the_live_display_draws_the_stages_in_a_terminal(deployment):
    host, env, root = deployment
    if not (root / "models" / "wine.toml").exists():
        wine_frame().to_csv(root / "wine.csv", index=False)
        assert mlops(env, "init", str(root / "wine.csv"), "--target", "cultivar").returncode == 0
    bad = _bad_wine(root, "no-proline-tty.csv")
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command with a terminal on its stdin, stdout and stderr
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "mlops", "drop", str(bad), "--model", "wine", "--watch"],
                  {**env, "TERM": "xterm-256color", "COLUMNS": "140", "LINES": "40"})
    chunks, deadline = [], time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 3, screen
    assert "\x1b[" in screen  # drawn, coloured and redrawn in place
    assert "━" in screen and "stage" in screen and "failed" in screen
    assert "missing column(s) 'proline'" in screen
