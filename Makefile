# Set-up is part of every target: a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m mleops.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900 tests

bench: $(STAMP)
	$(PY) benchmarks/fit_vs_scipy.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks components pipelines serving

clean:
	rm -rf $(VENV) .pytest_cache
