# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.camotune-installed

.PHONY: install demo test lint bench bench-full clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/camotune demo

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=25

lint: install
	$(VENV)/bin/ruff check .

bench: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run.py --quick

bench-full: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run.py --full

clean:
	rm -rf build *.egg-info .pytest_cache .ruff_cache
