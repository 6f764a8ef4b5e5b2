# Every target sets up what it needs on a fresh machine (Python 3.11 and Node.js with npm).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench bench-pipeline bench-serving bench-monitoring bench-isolation clean

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## Run the system: the local Functions host on http://localhost:7071 (embedded backends),
## with the two example datasets dropped so both example models get trained and served.
PORT ?= 7071

run: setup
	$(PY) -m devhost --drop-examples --port $(PORT)

## Run every test (Azurite is started by the test fixtures).
test: setup
	$(PY) -m pytest

bench: bench-pipeline bench-serving bench-monitoring bench-isolation

bench-pipeline: setup
	$(PY) -m bench.pipeline

bench-serving: setup
	$(PY) -m bench.serving

bench-monitoring: setup
	$(PY) -m bench.monitoring

bench-isolation: setup
	$(PY) -m bench.isolation

clean:
	rm -rf .data .pytest_cache
