# taskpulse — `make run` to see it work, `make test` to check it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit integration bench bench-quick soak lint schemas clean deps deps-python

# The peers the bench compares with (Quix Streams) pin an older pydantic than taskpulse: they
# get an environment of their own.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): bench/peers/requirements.txt
	python3 -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEERS_STAMP)

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

bench: deps-python $(STAMP) $(PEERS_STAMP)  ## end-to-end throughput, latency, memory, peers (prints figures; asserts nothing)
	$(PY) bench/run.py --peers-python $(PEERS_VENV)/bin/python

bench-quick: deps-python $(STAMP)  ## 20,000 events, no peers: for use while developing
	$(PY) bench/run.py --quick

soak: deps-python $(STAMP)  ## 5,000,000 events through one worker with every role: flat RSS, every event accounted for
	$(PY) bench/soak.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pylint pipeline  ## duplicate-code only (pyproject [tool.pylint])

schemas: $(STAMP)
	$(VENV)/bin/taskpulse schemas

clean:
	rm -rf $(VENV) $(PEERS_VENV) .taskpulse .pytest_cache
