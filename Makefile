# complaints-worker: `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

## demo: run the real worker end to end on embedded IMAP/SMTP servers; mail lands in demo-out/
demo: $(STAMP)
	$(BIN)/complaints-worker demo --out demo-out

## test: lint, type-check the package (the core strictly), check migrations, run the whole suite
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

## bench: print the benchmark figures (not part of make test); bench/RESULTS.md records them.
## Calendar, ingest (vs django-helpdesk), floor, latency, scale in turn; ingest, floor and latency need ../shared.
## `make bench BENCH_ARGS=--quick` is a small smoke run; BENCH_ARGS="--only ingest" picks one.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check worker tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy worker

clean:
	rm -rf $(VENV) demo-out .demo .pytest_cache .mypy_cache .ruff_cache
