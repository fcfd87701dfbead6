# taskpulse — `make run` to see it work, `make test` to check it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit integration bench lint schemas clean deps deps-python

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[worker,embedded,dev]'
	touch $(STAMP)

# System packages (Debian): what the suite runs (docker-compose, promtool, amtool, prometheus,
# alertmanager, stunnel4, openssl) or only python3-venv; installs what is missing (as root),
# otherwise prints the command.  See scripts/install-deps.sh.
deps:
	scripts/install-deps.sh test

deps-python:
	scripts/install-deps.sh python

run: deps-python $(STAMP)  ## embedded stack + demo traffic + live status (Ctrl-C stops)
	$(VENV)/bin/taskpulse up

test: deps $(STAMP)  ## the whole suite, against the real broker and ClickHouse engine
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: deps $(STAMP)
	$(PY) -m pytest -q tests/integration

bench: deps-python $(STAMP)  ## end-to-end throughput and latency (prints figures; asserts nothing)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pylint pipeline  ## duplicate-code only (pyproject [tool.pylint])

schemas: $(STAMP)
	$(VENV)/bin/taskpulse schemas

clean:
	rm -rf $(VENV) .taskpulse .pytest_cache
