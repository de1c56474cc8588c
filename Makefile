# Two commands: `make serve` (set up, then serve on CPU with the shipped weights)
# and `make test` (set up, then lint and run the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-stamp
# PyPI's own torch build (CUDA; it runs on a CPU too): PyPI's torchvision, which spandrel needs for
# community models, is built against it and fails beside a `+cpu` wheel. pip's configuration here
# prefers a local `+cpu` wheel, so the test set-up asks PyPI directly.
PYPI_TORCH := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(PY) -m pip install -q 'torch==2.13.0'

.PHONY: setup community serve upscale test lint bench weights clean

# Serving: the light install (torch 2.13.0 for CPU where pip finds one).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[server]'
	touch $@

# Tests and community models: PyPI's torch, then every extra.
$(TEST_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if $(PY) -m pip show torch 2>/dev/null | grep -q '^Version: .*+cpu'; then $(PY) -m pip uninstall -q -y torch; fi
	$(PYPI_TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The CRD schemas tests/test_k8s.py validates ScaledObject and ServiceMonitor against (npm).
CRDS := tests/k8s_crds/node_modules/.package-lock.json
$(CRDS): tests/k8s_crds/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/k8s_crds --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the CRD schema test will skip" >&2; fi

setup: $(STAMP)

community: $(TEST_STAMP)

serve: $(STAMP)
	$(VENV)/bin/srserve serve

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check .

test: lint $(CRDS)
	$(PY) -m pytest

bench: $(TEST_STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.compare --json bench-cpu.json

weights: $(TEST_STAMP)
	BIN=$(VENV)/bin scripts/train_weights.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
