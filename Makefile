# The two commands of the README: `make run` (set up + main job) and `make test` (set up + all tests).
PYTHON ?= .venv/bin/python
MODELS ?=

.PHONY: setup run test lint bench-smoke

setup:
	python3 scripts/provision.py

run: setup
	$(PYTHON) scripts/run_examples.py $(if $(MODELS),--models $(MODELS),)

test: setup
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check .

bench-smoke: setup
	$(PYTHON) -m bench.lcm_bench --smoke
