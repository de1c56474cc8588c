# Two commands: `make serve` (set up, then serve on CPU with the shipped weights)
# and `make test` (set up, then lint and run the whole suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: setup serve upscale test lint bench weights clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The CRD schemas tests/test_k8s.py validates ScaledObject and ServiceMonitor against (npm).
CRDS := tests/k8s_crds/node_modules/.package-lock.json
$(CRDS): tests/k8s_crds/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/k8s_crds --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the CRD schema test will skip" >&2; fi

setup: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/srserve serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint $(CRDS)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.compare --json bench-cpu.json

weights: $(STAMP)
	BIN=$(VENV)/bin scripts/train_weights.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
