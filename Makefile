# Two commands from a fresh clone: `make demo` and `make test`.
# Both install requirements.lock (every package pinned, CPU torch); pyproject keeps ranges for library users.
# `make lock` re-resolves pyproject's ranges in a throwaway venv and rewrites the lock and binder/requirements.txt.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
SRC := $(shell find qlora_nb widgets -type f \( -name '*.py' -o -name '*.js' -o -name '*.css' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \) 2>/dev/null) pyproject.toml

.PHONY: demo test test-fast lint bench bench-smoke model browser-deps clean lock gpu-check llamacpp-check

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, alone, from the CPU index (the lock's +cpu pin); then everything else from the lock.
# TORCH_INDEX= (empty) where the wheel comes from pip's own configuration (a local wheelhouse) instead.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_OPT = $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
$(VENV)/.deps: $(BIN)/python requirements.lock
	$(PIP) install -q --no-deps $(TORCH_INDEX_OPT) "$$($(PY) scripts/lock.py --torch-pin)"
	$(PIP) install -q -r requirements.lock
	touch $@

# The lock: pyproject's newest allowed releases (torch as pinned in constraints.txt, the CPU wheel), frozen.
LOCK_VENV ?= .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_INDEX_OPT) -c constraints.txt ".[test]"
	$(LOCK_VENV)/bin/python scripts/lock.py $(LOCK_VENV)/bin/python
	rm -rf $(LOCK_VENV)

# Installed as a built wheel (not editable), so the tests see the widget assets exactly as users get them.
$(STAMP): $(VENV)/.deps $(SRC)
	$(PIP) install -q --no-deps --force-reinstall .
	touch $@

model: $(STAMP)
	$(BIN)/python -m qlora_nb.cli fetch-model

demo: $(STAMP) model
	$(BIN)/python -m qlora_nb.cli demo

# Debian's headless Chromium for tests/test_browser.py (Playwright drives it and never downloads a browser),
# and the venv's python3 kernelspec that nbclient and JupyterLab start for the notebooks.
browser-deps: $(VENV)/.deps
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null

lint: $(STAMP)
	$(BIN)/ruff check qlora_nb tests benchmarks

test: $(STAMP) model browser-deps
	$(BIN)/ruff check qlora_nb tests benchmarks
	cd tests && ../$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --rootdir=.. -c ../pyproject.toml .

# The edit-test loop: everything but the browser, notebook and demo-model tests (markers in pyproject.toml,
# assigned by file and fixture in tests/conftest.py); a few minutes on 2 cores. CI runs the full `make test`.
test-fast: $(STAMP)
	$(BIN)/ruff check qlora_nb tests benchmarks
	cd tests && ../$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 --rootdir=.. -c ../pyproject.toml \
	  -m "not browser and not integration and not slow" .

bench: $(STAMP) model
	$(BIN)/python benchmarks/run.py --mode full

# On one GPU, < 8 min: random Llama 1B and 8B in NF4, ledger/planner/paged optimizer/merge checks, FSDP-QLoRA
# through %qlora_launch (2 ranks on 2 GPUs, else 1), tokens/s vs
# the plain recipe -> benchmarks/results/gpu-*.json and RESULTS.md. Needs no download (see benchmarks/README.md).
# Runs the checkout with the GPU machine's own Python (a CUDA torch), not the CPU venv the lock builds.
GPU_PY ?= python3
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} PYTHONUNBUFFERED=1 $(GPU_PY) benchmarks/gpu_check.py

# Opt-in, never part of `make test`: the exported GGUF files run by llama.cpp itself (llama-cpp-python, pinned in
# qlora_nb/engine/generation/llamacpp.py). It has no CPU wheel on the index, so the first run builds it from source
# (cmake + a C++ compiler, 20-35 min on 2 cores) into LLAMACPP_LIB, kept between runs (pip's wheel cache makes a
# reinstall take seconds). Then benchmarks/llamacpp_check.py -> benchmarks/results/llamacpp-check-*.json.
LLAMACPP_LIB ?= $(HOME)/.cache/qlora_nb/llamacpp-lib
$(LLAMACPP_LIB)/.installed: qlora_nb/engine/generation/llamacpp.py | $(STAMP)
	$(PIP) install --no-deps --upgrade --target $(LLAMACPP_LIB) \
	  "$$($(BIN)/python -c 'from qlora_nb.engine.generation.llamacpp import PIN; print(PIN)')" diskcache==5.6.3
	touch $@

llamacpp-check: $(STAMP) model $(LLAMACPP_LIB)/.installed
	PYTHONPATH=$(LLAMACPP_LIB) PYTHONUNBUFFERED=1 $(BIN)/python benchmarks/llamacpp_check.py

bench-smoke: $(STAMP) model
	$(BIN)/python benchmarks/run.py --mode smoke

clean:
	rm -rf $(VENV) build dist test-artifacts
