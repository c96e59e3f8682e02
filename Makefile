# Two commands on a fresh machine (both idempotent; the first run creates .venv):
#   make demo   POMP end to end in the synthetic world (render, pre-train, evaluate, intervals, plot)
#   make test   run the whole test suite
# make test-fast: the suite less its end-to-end trainings (tests marked slow); make lint: ruff.
# Two install layers (tools/install.sh): the demo, claims and benchmarks need only the core
# (no mmcv build); the tests and the linter install everything (install-all).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-core install-all demo claims test test-fast lint bench clean

install: install-all

install-core:
	VENV=$(VENV) bash tools/install.sh core

install-all:
	VENV=$(VENV) bash tools/install.sh all

demo: install-core
	$(PY) tools/synthetic/demo.py

claims: install-core
	$(PY) tools/synthetic/claims.py

# pytest-xdist: TEST_WORKERS processes, each given one test module at a time (--dist loadfile: a
# module's fixtures are built once); tests/conftest.py splits the cores between them and orders
# the longest modules first (--no-loadscope-reorder keeps that order: xdist would otherwise sort
# modules by their number of tests). TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile \
	--no-loadscope-reorder)

test: install-all
	$(PYTEST) tests

test-fast: install-all
	$(PYTEST) -m "not slow" tests

# the line length of setup.cfg's [flake8] section, the one place it is set
lint: install-all
	$(PY) -m ruff check --select E,F,W --line-length \
	  $$(sed -n 's/^max-line-length *= *//p' setup.cfg) pomp_mm tools tests configs

bench: install-core
	$(PY) tools/benchmarks/text_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
