# Two commands from a fresh clone: `make demo` and `make test`.
# torch is pinned to the CPU wheel through constraints.txt here only (not in pyproject).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
SRC := $(shell find qlora_nb widgets -type f \( -name '*.py' -o -name '*.js' -o -name '*.css' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' \) 2>/dev/null) pyproject.toml

.PHONY: demo test lint bench bench-smoke model browser-deps clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.deps: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt ".[test]"
	touch $@

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

bench: $(STAMP) model
	$(BIN)/python benchmarks/run.py --mode full

bench-smoke: $(STAMP) model
	$(BIN)/python benchmarks/run.py --mode smoke

clean:
	rm -rf $(VENV) build dist test-artifacts
