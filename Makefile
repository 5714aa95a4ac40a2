# The two commands a newcomer needs: `make serve` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TOOLS := .venv-tools
STAMP := $(VENV)/.installed-stamp
TOOLS_STAMP := $(TOOLS)/.installed-stamp
PORT ?= 3000
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: serve test unit integration template lint format typecheck bench bench-peer bench-gateway build clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# SAM CLI and checkov pin many packages of their own: they live in a separate venv.
$(TOOLS_STAMP): tools/requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q -r tools/requirements-tools.txt
	touch $@

serve: $(STAMP)  ## start the local stack on 127.0.0.1:$(PORT)
	PORT=$(PORT) exec $(BIN)/dicomweb-serve

.PHONY: viewer
viewer: $(STAMP)  ## OHIF Viewer on 127.0.0.1:3001 (VIEWER_PORT) over the local stack on $(PORT); docs/viewer.md
	PORT=$(PORT) exec $(BIN)/dicomweb-viewer

test: $(STAMP) $(TOOLS_STAMP)  ## lint, type-check, then every test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m tests.support.debian_tools  # Debian tools the tests run, installed once before they start
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/python -m pytest -n 2 --dist loadgroup

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

template: $(STAMP) $(TOOLS_STAMP)
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/python -m pytest tests/template

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## benchmarks; JSON into bench/results/
	$(BIN)/python -m bench

bench-peer: $(STAMP)  ## side by side with Orthanc (installs it from Debian as root)
	$(BIN)/python -m bench.bench_peer

bench-gateway: $(STAMP)  ## the DIMSE gateway's C-FIND and C-MOVE side by side with Orthanc
	$(BIN)/python -m bench.bench_gateway

build: $(TOOLS_STAMP)  ## sam build without Docker (cross-installs arm64 / py3.13 wheels)
	$(TOOLS)/bin/sam build --template-file template.yaml

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache bench/results
