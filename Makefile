# Every target sets up what it needs on a fresh machine (Python 3.11 and Node.js with npm).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# MLflow's client for the invocations test, in its own environment (its pins are not ours).
VENV_MLFLOW := .venv-mlflow

.PHONY: setup lint docs serving-env package bench-package run test bench bench-pipeline bench-serving bench-monitoring bench-evidently bench-isolation clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# the `mlops` command (its dependencies are in requirements-dev.txt)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV_MLFLOW)/.installed: requirements-mlflow.txt
	$(PYTHON) -m venv $(VENV_MLFLOW)
	$(VENV_MLFLOW)/bin/python -m pip install --quiet -r requirements-mlflow.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The linters live in their own venv: checkov's pins clash with the app's.
TOOLS := .venv-tools
$(TOOLS)/.installed: requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade pip
	$(TOOLS)/bin/python -m pip install --quiet -r requirements-tools.txt
	touch $@

## Lint the Python code (ruff over the repository, mypy over shared/ and functions/: both
## configured in pyproject.toml, run from .venv so mypy sees the installed libraries), the
## infrastructure (checkov on infra/: no failed check; the Bicep compiler and linter when
## `az bicep` or `bicep` is on PATH, warnings as errors; every resource against Azure's published
## types with tools/bicep_check.py when its .bicep-types/ cache exists, which CI never has), the
## workflows (actionlint) and the azd hooks (shellcheck).
lint: $(VENV)/.installed $(TOOLS)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	BC_SKIP_MAPPING=TRUE $(TOOLS)/bin/checkov -d infra --compact --quiet --skip-download
	infra/lint.sh
	@if [ -f .bicep-types/types.json ]; then $(PY) -m tools.bicep_check; \
	else echo "bicep types: no .bicep-types/ cache: resource types NOT checked (python -m tools.bicep_types CHECKOUT builds it)"; fi
	$(TOOLS)/bin/actionlint .github/workflows/*.yml
	@if command -v shellcheck >/dev/null; then shellcheck infra/*.sh infra/hooks/*.sh; \
	else echo "shellcheck: not on PATH: infra/ scripts NOT checked (.ci/run installs it)"; fi

## The serving app's dependencies as its package carries them (tests/deploy/test_serving_package.py
## builds the same on first use): rebuilt only when requirements-serving.txt or the prune list change.
serving-env: setup
	$(PY) -c "from pathlib import Path; from tools.package import ensure_site; ensure_site('serving', Path('.venv-serving'))"

## The two deployment packages, as the workflow builds them.
package: setup
	$(PY) -m tools.package serving --zip app-serving.zip
	$(PY) -m tools.package pipeline --zip app-pipeline.zip

bench-package: setup
	$(PY) -m bench.package

## Build the documentation site into site/ (MkDocs Material, --strict: a warning or a broken
## link fails). Its own venv: the hooks import the project to derive the HTTP API reference and
## the settings table, so it holds the runtime requirements too.
DOCS_VENV := .venv-docs
$(DOCS_VENV)/.installed: requirements-docs.txt requirements.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install --quiet -r requirements-docs.txt
	touch $@

docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

## Run the system: the local Functions host on http://localhost:7071 (embedded backends),
## with the two example datasets dropped so both example models get trained and served.
PORT ?= 7071

run: setup
	$(PY) -m devhost --drop-examples --port $(PORT)

## Run every test (Azurite is started by the test fixtures; MLflow's client has its own venv;
## .ci/chromium finds, or installs with apt-get, the browser the console test drives).
test: setup $(VENV_MLFLOW)/.installed
	.ci/chromium
	$(PY) -m pytest

bench: bench-pipeline bench-serving bench-monitoring bench-isolation

bench-pipeline: setup
	$(PY) -m bench.pipeline

bench-serving: setup
	$(PY) -m bench.serving

bench-monitoring: setup
	$(PY) -m bench.monitoring

## Evidently's DataDriftPreset on the same data, in its own environment: Evidently 0.7 does
## not import under pandas 3, which the project pins. Writes bench/results/evidently.json,
## which bench-monitoring prints beside its own figures.
EVIDENTLY_VENV ?= .venv-evidently
EVIDENTLY_VERSION ?= 0.7.23

$(EVIDENTLY_VENV)/.installed:
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/python -m pip install --quiet "evidently==$(EVIDENTLY_VERSION)" "pandas==2.3.3"
	touch $@

bench-evidently: $(EVIDENTLY_VENV)/.installed
	$(EVIDENTLY_VENV)/bin/python -m bench.evidently_drift

bench-isolation: setup
	$(PY) -m bench.isolation

clean:
	rm -rf .data .pytest_cache site
