# One entry point for people and CI: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override (e.g. TORCH_SPEC=torch) for a CUDA machine.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.lspilot-installed
LINTED := lsp daemon protocol lspilot tests bench

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" -e '.[daemon,test]'
	touch $(STAMP)

install: $(STAMP)

# Starts the daemon with the default model (pulled, verified and converted on first use),
# then completes the hole in examples/fib.py through the real language server.
demo: install
	$(VENV)/bin/lspilot complete examples/fib.py --line 4 --character 4 --json

test: install
	bash scripts/editors-for-tests.sh
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy
	$(PY) -m pytest -ra

lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
