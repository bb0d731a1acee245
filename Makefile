# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   - the main job on tiny built-in models (no downloads, CPU)
#   make test   - the whole test suite (parity with the reference packages included) plus lint
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint typecheck bench clean parity parity-env browser

# Install from the package registry's default builds only. Some machines' pip configuration adds a
# find-links folder with a CPU-only torch wheel, which no published torchvision (open_clip needs it)
# can load next to; the registry's torch runs on CPU-only machines too.
PIP_INSTALL := env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(PY) -m pip install

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -q --upgrade pip
	$(PIP_INSTALL) -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/evalkit demo --out evalkit-demo

lint: install
	$(VENV)/bin/ruff check evalkit tests bench prompts parity

# The package's types (pyproject.toml [tool.mypy]); part of make test, so CI runs it.
typecheck: install
	$(VENV)/bin/mypy

# The reference packages (image-reward, hpsv2) cannot share the main environment; parity tests
# run them in .venv-ref (parity/install-reference.sh) on the same random weights and inputs.
parity-env:
	PYTHON=$(PYTHON) bash parity/install-reference.sh

parity: install parity-env
	$(PY) -m pytest -q -p no:cacheprovider -m parity

# Debian's Chromium for the site's browser tests (skipped, with a reason, where it cannot be installed).
browser:
	bash ci/install-chromium.sh

test: install lint typecheck parity-env browser
	$(PY) -m pytest -q -p no:cacheprovider --durations=25

bench: install
	$(PY) bench/generate_overhead.py

clean:
	rm -rf $(VENV) .venv-ref evalkit-demo
