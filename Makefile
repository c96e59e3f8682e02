# Two commands on a fresh machine (both idempotent; the first run creates .venv):
#   make demo   embed a built-in vocabulary with a tiny random CLIP and print the table
#   make test   run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench clean

install:
	VENV=$(VENV) bash tools/install.sh

demo: install
	$(PY) tools/demo.py

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) tools/benchmark_text_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
