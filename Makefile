# osdn — one environment (.venv), a few targets. The README's two commands are `make report` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
CORE    := $(VENV)/.core-stamp
STAMP   := $(VENV)/.installed-stamp
REPORTS ?= reports

.PHONY: report test pytest docs env clean gpu-test tolerance bench bench-ref recall mqar

# The environment: torch==2.13.0 is the CPU wheel on local disk (any looser request pulls a CUDA build).
# `make report` needs only the runtime dependencies; the test and docs extras come with `make test`.
$(CORE): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $(CORE)

$(STAMP): $(CORE)
	$(BIN)/pip install -q -e '.[test,docs]'
	touch $(STAMP)

env: $(STAMP)

## Main job: T1–T5 verification table (reports/verify.{md,json}).
report: $(CORE)
	$(BIN)/osdn verify --out $(REPORTS)

## Tests (Hypothesis profile from HYPOTHESIS_PROFILE, default ci) and the docs build, warnings as errors.
test: pytest docs

# pytest-xdist: one worker per core (`auto`); `make test PYTEST_JOBS=0` runs serially, in one process.
PYTEST_JOBS ?= auto

pytest: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_JOBS)

docs: $(STAMP)
	@if [ -f docs/conf.py ]; then $(BIN)/python -m sphinx -W --keep-going -n -q -b html docs docs/_build/html; \
	else echo "docs/conf.py not present yet: no docs to build"; fi

## CPU benchmarks of the float64 reference (pytest-benchmark), reports/bench-ref-cpu.json.
bench-ref: $(STAMP)
	mkdir -p $(REPORTS)
	$(BIN)/python -m pytest -o addopts="" --benchmark-only --benchmark-json=$(REPORTS)/bench-ref-cpu.json tests/test_bench_ref.py

## On a machine with a CUDA GPU: the fast-path tests at realistic shapes, the tolerance report, the benchmark.
gpu-test: $(STAMP)
	$(BIN)/python -m pytest -m gpu tests

tolerance: $(STAMP)
	$(BIN)/osdn tolerance --out $(REPORTS)

bench: $(STAMP)
	$(BIN)/osdn bench --out $(REPORTS)

recall: $(STAMP)
	$(BIN)/osdn recall --out $(REPORTS)

mqar: $(STAMP)
	$(BIN)/osdn mqar --budget-min 5 --out $(REPORTS)

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis .benchmarks
