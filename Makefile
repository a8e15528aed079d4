# Two commands on a fresh machine:  make quickstart   and   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch pinned for machines without a GPU. GPU users: `make TORCH= quickstart`
# after installing the torch build for their CUDA into the venv (pyproject keeps torch>=2.4 open).
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: quickstart test test-slow test-all install clean-venv smolagents

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/python -m pip install -q $(TORCH))
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/londinium quickstart

# The default run: every test but the slow ones (under ~10 min on 2 cores; the default corpus needs
# the package index or a warm download cache). The slow ones (the real default corpus, DDP, soaks,
# compiled training, browsers, third-party servers) run with `make test-slow`; CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)

# smolagents for tests/integration/test_smolagents.py, in an interpreter of its own: its MCP adapter
# (mcpadapt) needs Python >= 3.12 and the 1.x `mcp` client, and londinium runs on the 2.x SDK.
# The first of python3.13, python3.12, or a pyenv-installed 3.12+ (pyenv's shims refuse a version
# that is installed but not selected) that runs; or say which: make smolagents SMOLAGENTS_PYTHON=/path/to/python3.12
SMOLAGENTS_PYTHON ?= $(shell for p in python3.13 python3.12 $$(pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python3; do $$p -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null && echo $$p && break; done)
smolagents:
	@test -n "$(SMOLAGENTS_PYTHON)" || { echo "make smolagents: no Python >= 3.12 found; give one: make smolagents SMOLAGENTS_PYTHON=/path/to/python3.12" >&2; exit 2; }
	test -x .venv-smolagents/bin/python || $(SMOLAGENTS_PYTHON) -m venv .venv-smolagents
	.venv-smolagents/bin/python -m pip install -q 'smolagents[mcp]>=1.26' 'mcpadapt>=0.1.20' 'mcp[ws]>=1.20,<2' openai
