# The project's commands. Each target installs what it needs on a fresh machine, so `make test` and
# `make demo` work from a clean clone with nothing but Python 3.11, Node 20 and (for the broker) apt.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed
# checkov pins an older pycep-parser than the tests use, so it lives in its own venv.
VENV_INFRA := .venv-infra
STAMP_INFRA := $(VENV_INFRA)/.installed

.PHONY: help setup native chromium dashboard-vendor test unit integration lint infra-check bench demo dev clean faults report

VEHICLES ?= 5
DURATION ?= 60

help:
	@echo "make demo    - the whole loop offline: local stack + simulated fleet, then a report (VEHICLES=5 DURATION=60)"
	@echo "make report  - fleet analytics (PDF, PNGs, table) over the last demo's lake (.demo/lake), or LAKE=<dir or container URL>"
	@echo "make dev     - keep the local stack running until Ctrl-C"
	@echo "make test    - set up everything and run lint, type checks and the whole test suite"
	@echo "make bench   - ingestion benchmark (docs/performance.md)"
	@echo "make lint    - ruff + mypy only"
	@echo "make infra-check - Bicep parse, checkov scan and infra/code consistency tests"
	@echo "make faults  - fault suite: the telemetry pipeline under each injected fault, one table row per fault"

$(STAMP_PY): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(STAMP_INFRA): requirements-infra.txt
	$(PYTHON) -m venv $(VENV_INFRA)
	$(VENV_INFRA)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

# The dashboard's end-to-end test drives Debian's Chromium (never a downloaded browser build).
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else SUDO=false; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	  || echo "could not install chromium (apt-get, as root): the dashboard e2e test will be skipped outside CI"; }

# The telemetry fold compiled with mypyc (shared/native.py): rebuilt when its sources change; without a C compiler
# it says so and the fold runs interpreted. `TELEMETRY_COMPILED=false` runs the interpreted fold anyway.
NATIVE := .native/manifest.json
$(NATIVE): $(STAMP_PY) native/build.py pyproject.toml $(shell find shared -name '*.py')
	$(PY) -m native.build > .native-build.log 2>&1 || { cat .native-build.log; exit 1; }
	@tail -n 1 .native-build.log

native: $(NATIVE)

setup: $(STAMP_PY) $(STAMP_NODE) $(STAMP_INFRA) $(NATIVE) chromium

# The dashboard ships MSAL.js's browser build at the version package.json pins (tests/unit/test_dashboard.py
# fails while they differ): run after changing that pin.
dashboard-vendor: $(STAMP_NODE)
	cp node_modules/@azure/msal-browser/lib/msal-browser.min.js shared/dashboard/static/vendor/msal-browser.min.js
	cp node_modules/@azure/msal-browser/LICENSE shared/dashboard/static/vendor/msal-browser.LICENSE.txt

lint: $(STAMP_PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy function_app.py functions shared devstack simulator bench edge analytics native

# As `make test` runs them: the fold compiled when a build of these sources exists (made here if not), then the
# tests that reach inside the fold again with it interpreted.
unit: $(STAMP_PY) $(NATIVE)
	$(PY) -m pytest tests/unit -q
	TELEMETRY_COMPILED=false $(PY) -m pytest tests/unit -q -p no:randomly -m interpreted

integration: setup
	$(PY) -m pytest tests/integration -q

infra-check: $(STAMP_PY) $(STAMP_INFRA)
	$(PY) -m pytest tests/infra -q

# --durations: CI prints the slowest tests, so the suite's time (kept well under 30 minutes) is watched run by run
test: setup lint
	$(PY) -m pytest -q --durations=20
	TELEMETRY_COMPILED=false $(PY) -m pytest -q -p no:randomly -m interpreted

bench: setup
	$(PY) -m bench

demo: setup
	$(PY) -m devstack demo --vehicles $(VEHICLES) --duration $(DURATION)

# The fleet analyst's report (analytics/): the Power BI model's measures computed with DuckDB over the lake's
# Parquet. LAKE: a directory (default: the one `make demo` copies out of Azurite) or the container URL in Azure
# (read as you: az login, Storage Blob Data Reader); the report goes to REPORT_OUT.
LAKE ?= .demo/lake
REPORT_OUT ?= .demo/report
report: $(STAMP_PY)
	$(PY) -m analytics --lake $(LAKE) --out $(REPORT_OUT)

dev: setup
	$(PY) -m devstack dev --vehicles $(VEHICLES)

# The telemetry pipeline under each fault of devstack/faults.py (and SIGKILL of the function worker):
# lost, duplicated, stalled, recovery seconds per fault. FAULTS_ARGS=--ci for the test suite's size.
faults: setup
	$(PY) -m devstack.fault_suite $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis .local
