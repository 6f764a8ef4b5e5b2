"""The serving app's package carries only what serving needs, and serves from it.

The package's dependencies (``requirements-serving.txt``, pruned as ``tools/package.py``
prunes them) are installed into ``.venv-serving`` (rebuilt only when the requirements or the
prune list change). A bare interpreter with only that folder and the app on its path then
imports the serving role, answers a prediction from a version registered here (by the main
environment, on a temporary data folder) and calls every serving route.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from models.examples import example_datasets
from shared.context import Context
from shared.core.settings import Settings
from shared.monitoring.monitor import monitor_all
from tests.conftest import ROOT
from tests.helpers import drain, drop
from tools import package

TRAINING_STACK = ("scikit-learn", "skl2onnx", "pandas", "scipy")


def pins(path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


@pytest.fixture(scope="module")
def site():
    """The serving package's site-packages (cached in .venv-serving)."""
    return package.ensure_site("serving", ROOT / ".venv-serving")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data folder with both example models trained, registered, promoted and monitored once."""
    d = tmp_path_factory.mktemp("serving-data")
    ctx = Context.from_settings(Settings.from_env({"MLOPS_DATA_DIR": str(d)}))
    for model, (file, data) in example_datasets(2000).items():
        assert drop(ctx, model, file, data).ok
    drain(ctx)
    assert all(ctx.registry.alias(m) for m in ("wind_power", "breast_cancer"))
    monitor_all(ctx)  # a report for the monitoring routes to show
    ctx.close()
    return d


def bare(site, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """This interpreter without its site-packages (-S), with ``site`` and the app on its path."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MLOPS_", "VIRTUAL_ENV"))}
    return subprocess.run([sys.executable, "-S", *args], cwd=ROOT, env={**clean, **(env or {})}, check=check,
                          capture_output=True, text=True, timeout=120)


def test_the_serving_requirements_hold_no_training_stack_and_pin_what_the_app_pins():
    serving, app = pins(ROOT / "requirements-serving.txt"), pins(ROOT / "requirements.txt")
    assert not set(TRAINING_STACK) & set(serving), "the serving set names a training library"
    differ = {k: (v, app[k]) for k, v in serving.items() if k in app and app[k] != v}
    assert not differ, f"pinned differently from requirements.txt: {differ}"
    assert {"onnxruntime", "numpy", "azure-functions", "azure-storage-blob"} <= set(serving)


def test_the_serving_environment_cannot_import_the_training_stack(site):
    for module in ("sklearn", "skl2onnx", "pandas", "scipy"):
        done = bare(site, "-c", f"import sys; sys.path[:0] = [{str(site)!r}]; import {module}", check=False)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, f"{module} imports in the serving set"


def test_the_serving_role_answers_every_route_from_the_serving_package(site, data_dir):
    done = bare(site, "tools/serving_smoke.py", str(site),
                env={"MLOPS_APP_ROLE": "serving", "MLOPS_DATA_DIR": str(data_dir)}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["predict_status"] == 200 and out["predict_body"]["version"] == 1
    assert len(out["predict_body"]["predictions"]) == 1 and out["predict_body"]["predictions"][0] > 0
    assert out["training_stack_imported"] == []
    assert {"onnxruntime", "numpy"} <= set(out["heavy_imported"])  # it really ran a session
    statuses = out["statuses"]
    failed = {k: v for k, v in statuses.items() if not isinstance(v, int) or v >= 500}
    assert not failed, f"routes failing in the serving package: {failed}"
    assert out["unrouted"] == [], f"routes the smoke run does not call: {out['unrouted']}"
    for route in ("infer_v2", "invocations", "get_version", "openapi", "console", "monitoring_plotly",
                  "monitoring_latest_html", "monitoring_report", "monitoring_reports"):
        assert statuses[route] == 200, (route, statuses[route])
    assert statuses["feedback"] == 202  # stored as Parquet without pandas
    # found in the inference log's Parquet part, then among the stored feedback's (pyarrow.compute
    # filters: the serving set has no pyarrow.dataset)
    assert (out["feedback_body"]["matched"], out["feedback_body"]["unmatched"]) == (1, 0), out["feedback_body"]
    assert (out["feedback_again_body"]["matched"], out["feedback_again_body"]["duplicates"]) == (0, 1)
    assert statuses["get_rollout"] == 404 and statuses["rollout_action"] == 404  # none started: said, not a crash
    assert statuses["predict_breast_cancer"] == 400  # a bad row is refused by name, not a crash


def test_the_serving_package_zip_holds_the_app_and_the_pruned_set(site, tmp_path):
    stats = package.write_zip(tmp_path / "serving.zip", site)
    import zipfile

    names = set(zipfile.ZipFile(tmp_path / "serving.zip").namelist())
    assert {"function_app.py", "host.json", "functions/http_api.py", "models/wind_power.toml"} <= names
    assert f"{package.SITE}/onnxruntime/__init__.py" in names
    assert not any(n.startswith(("tests/", "devhost/", "bench/", "tools/", ".venv", ".mypy_cache/", ".ruff_cache/",
                                 ".hypothesis/", "site/")) for n in names)
    assert not any(f"{package.SITE}/{p}/" in n for n in names for p in ("pandas", "sklearn", "scipy", "skl2onnx"))
    assert not any("libarrow_flight" in n or "/pyarrow/include/" in n for n in names)
    assert stats.files == len(names)


def test_every_native_module_of_the_pruned_stripped_set_loads(site):
    """Pruning removed no library a module links, and stripping left every library loadable."""
    modules = sorted({".".join(p.relative_to(site).with_suffix("").with_suffix("").parts)
                      for p in site.rglob("*.so") if p.name.endswith((".cpython-311-x86_64-linux-gnu.so", ".abi3.so"))})
    assert len(modules) > 25 and "pyarrow._parquet" in modules and "numpy._core._multiarray_umath" in modules
    script = ("import importlib, json, sys; sys.path[:0] = [sys.argv[1]]; failed = {}\n"
              "for m in sys.argv[2:]:\n"
              "    try: importlib.import_module(m)\n"
              "    except Exception as exc: failed[m] = repr(exc)[:200]\n"
              "print(json.dumps(failed))")
    done = bare(site, "-c", script, str(site), *modules)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
    if not (shutil.which("strip") and shutil.which("readelf")):
        pytest.skip("no binutils here: tools.package built the set unstripped, as it says it does")
    libs = [p for p in site.rglob("*.so*") if p.is_file() and p.read_bytes()[:4] == b"\x7fELF"
            and not p.relative_to(site).parts[0].endswith(".libs")]  # auditwheel's grafts stay as they are
    unstripped = [str(p.relative_to(site)) for p in libs
                  if ".symtab" in subprocess.run(["readelf", "-S", str(p)], capture_output=True, text=True).stdout]
    assert not unstripped, f"native libraries still carrying symbol tables: {unstripped[:5]}"


def test_the_serving_set_holds_no_arrow_library_its_modules_do_not_use(site):
    assert not [p for pattern in package.ARROW_EXTRAS for p in (site / "pyarrow").glob(pattern)]
    if not shutil.which("readelf"):
        pytest.skip("no readelf here")
    present = {p.name for p in (site / "pyarrow").glob("*.so*")}
    for path in (site / "pyarrow").glob("*.so*"):
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True).stdout
        arrow = set(re.findall(r"NEEDED.*\[(libarrow\w*|libparquet\w*)\.so[.\d]*\]", dynamic))
        assert all(any(n.startswith(lib + ".so") for n in present) for lib in arrow), (path.name, arrow)


def _shared_library(tmp, name: str, source: str, *link: str):
    (tmp / f"{name}.c").write_text(source)
    out = tmp / "pyarrow" / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(tmp / f"{name}.c"), *link,
                    f"-Wl,-soname,{name}"], check=True, capture_output=True)
    return out


@pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("nm") and package._patchelf()),
                    reason="needs gcc, nm and patchelf")
def test_an_arrow_library_is_unlinked_only_when_no_module_takes_a_symbol_from_it(tmp_path):
    (tmp_path / "pyarrow").mkdir()
    acero = _shared_library(tmp_path, "libarrow_acero.so.2600", "int acero_plan(void) { return 7; }")
    link = ("-Wl,--no-as-needed", f"-L{tmp_path / 'pyarrow'}", "-l:libarrow_acero.so.2600")
    idle = _shared_library(tmp_path, "_idle.so", "int idle(void) { return 1; }", *link)  # NEEDs it, uses nothing

    def needed(path):
        return subprocess.run([package._patchelf(), "--print-needed", str(path)], capture_output=True,
                              text=True, check=True).stdout.split()

    assert "libarrow_acero.so.2600" in needed(idle)
    user = _shared_library(tmp_path, "_user.so", "int acero_plan(void); int run(void) { return acero_plan(); }",
                           *link)
    with pytest.raises(RuntimeError, match=r"_user\.so uses \['acero_plan'\]"):
        package.unlink_arrow_extras(tmp_path)
    assert acero.exists()  # nothing removed when one module needs it

    user.unlink()
    assert package.unlink_arrow_extras(tmp_path) == ["pyarrow/libarrow_acero.so.2600"]
    assert not acero.exists() and "libarrow_acero.so.2600" not in needed(idle)
    import ctypes

    assert ctypes.CDLL(str(idle)).idle() == 1  # loads without it
