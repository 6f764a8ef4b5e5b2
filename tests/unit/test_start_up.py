"""What importing the app costs: no numerical library loads before the first request needs it.

The Functions worker imports ``function_app`` at each instance's start, and health probes and
the first requests wait on it; numpy alone doubles that import (0.16 s to 0.33 s measured when a
module-level ``import numpy`` slipped into the JSON body check).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("numpy", "pyarrow", "onnxruntime", "onnx", "pandas", "sklearn", "scipy", "plotly")


@pytest.mark.parametrize("role", ["serving", "pipeline"])
def test_importing_the_app_loads_no_numerical_library(role, tmp_path):
    script = f"import json, sys; import function_app; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "MLOPS_APP_ROLE": role, "MLOPS_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
