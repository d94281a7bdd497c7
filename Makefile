# fraudops: `make demo` runs the whole lifecycle on the embedded default,
# `make test` runs the tests. Both create .venv and install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
# The install is redone whenever the lock or the project metadata changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml serving/pyproject.toml constraints.txt 2>/dev/null | md5sum | cut -c1-12)
export FRAUDOPS_HOME ?= $(CURDIR)/.fraudops
LINT_PATHS := include serving tests bench dags plugins

.PHONY: lock install demo test test-fast lint format bench mlflow-ui clean help

help:
	@echo "make demo     run the whole lifecycle on the embedded default"
	@echo "make test     lint, type-check and run every test"
	@echo "make bench    run the benchmarks in bench/"
	@echo "make mlflow-ui  open the MLflow UI on the local tracking store"

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	# torch first through pip: it takes the CPU build that pip is configured to find
	# (uv does not look there); uv then keeps it, since the lock pins the same release.
	$(PY) -m pip install -q torch==2.13.0
	$(UV) pip install --python $(PY) -q -c constraints.txt -e '.[all]' -e './serving[registry,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

# Re-resolve the lock from constraints.in (torch's CUDA wheels are left out: the CPU or
# GPU build of torch is installed first, by pip).
lock: $(STAMP)
	@{ head -3 constraints.txt; $(UV) pip compile constraints.in --python-version 3.11 --no-header --no-annotate \
	  | grep -vE '^(-e |nvidia-|cuda-|triton==)'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

# The main job keeps its state apart (.fraudops/demo) and starts from scratch each time.
demo: $(STAMP)
	FRAUDOPS_HOME=$(FRAUDOPS_HOME)/demo $(VENV)/bin/fraudops demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy
	cd serving && ../$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINT_PATHS)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)

test: lint
	$(PY) -m pytest tests -n 2 --dist loadfile --durations 15

test-fast: $(STAMP)
	$(PY) -m pytest tests/unit tests/data -q

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(FRAUDOPS_HOME)/mlflow.db --port 5000

clean:
	rm -rf $(FRAUDOPS_HOME)
