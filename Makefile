# Two commands on a fresh machine (both idempotent; the first run creates .venv):
#   make demo   POMP end to end in the synthetic world (render, pre-train, evaluate, intervals, plot)
#   make test   run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo claims test bench clean

install:
	VENV=$(VENV) bash tools/install.sh

demo: install
	$(PY) tools/synthetic_demo.py

claims: install
	$(PY) tools/synthetic_claims.py

test: install
	$(PY) -m pytest -q tests

bench: install
	$(PY) tools/benchmark_text_encoder.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
