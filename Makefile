# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   - the main job on tiny built-in models (no downloads, CPU)
#   make test   - the whole test suite plus lint
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/evalkit demo --out evalkit-demo

lint: install
	$(VENV)/bin/ruff check evalkit tests bench prompts

test: install lint
	$(PY) -m pytest -q -p no:cacheprovider

bench: install
	$(PY) bench/generate_overhead.py

clean:
	rm -rf $(VENV) evalkit-demo
