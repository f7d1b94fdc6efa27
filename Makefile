# The two commands of the README: `make run` (set up + main job) and `make test` (set up + all tests).
PYTHON ?= .venv/bin/python
MODELS ?=
# Scripts and the bench import the pack as `lcm_lora_pack` from .pack/ (made by `setup`).
PACK_PATH = PYTHONPATH=$(CURDIR)/.pack$(if $(PYTHONPATH),:$(PYTHONPATH),)

.PHONY: setup run test lint bench-smoke

setup:
	python3 scripts/provision.py

run: setup
	$(PACK_PATH) $(PYTHON) scripts/run_examples.py $(if $(MODELS),--models $(MODELS),)

test: setup
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check .

bench-smoke: setup
	$(PACK_PATH) $(PYTHON) -m lcm_lora_pack.bench.lcm_bench --smoke
