# Set-up is part of every target: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

SERVING_PY := serving/.venv/bin/python
SERVING_STAMP := serving/.venv/.installed

.PHONY: demo test test-fast bench lint venv serving-venv clean docs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# seldon-core 1.17.1 (last Apache-2.0 release; 1.18+ is BSL 1.1) needs numpy<2, protobuf<4: the model server gets its own venv.
# Its packages, all pinned, are the list `mleops serving-env create` installs (package data), taken with --no-deps.
$(SERVING_STAMP): src/mleops/serving/seldon-requirements.txt pyproject.toml
	$(PYTHON) -m venv serving/.venv
	$(SERVING_PY) -m pip install --quiet --upgrade "pip<25"
	$(SERVING_PY) -m pip install --quiet --no-deps -r src/mleops/serving/seldon-requirements.txt
	$(SERVING_PY) -m pip install --quiet --no-deps -e .
	touch $(SERVING_STAMP)

serving-venv: $(SERVING_STAMP)

demo: $(STAMP)
	$(PY) -m mleops.demo

test: $(STAMP) $(SERVING_STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup --timeout 900 --durations=15 tests

# The inner loop: unit tests only (no servers, pipelines or model-server processes; -m "not slow").
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" --timeout 300 --durations=15 tests

bench: $(STAMP)
	$(PY) benchmarks/fit_vs_scipy.py

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks components pipelines serving

clean:
	rm -rf $(VENV) serving/.venv .pytest_cache
