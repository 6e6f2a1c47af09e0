# The front door. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Control plane for the test suite, pinned; built once into a cache outside the repository.
K8S_VERSION ?= v1.36.3
ETCD_VERSION ?= v3.6.14
KWOK_VERSION ?= v0.8.0
CONTROL_PLANE_DIR ?= $(HOME)/.cache/scaleml/control-plane/k8s-$(K8S_VERSION)
export SCALEML_CONTROL_PLANE_DIR := $(CONTROL_PLANE_DIR)

PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,workloads,dev]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtual environment with the operator and the dev tools

.PHONY: control-plane
control-plane: ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (cached)
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) KWOK_VERSION=$(KWOK_VERSION) \
		OUT=$(CONTROL_PLANE_DIR) hack/build-control-plane.sh

.PHONY: crds
crds: venv ## Regenerate crds/ and the README field reference from the API models
	$(BIN)/scaleml crds crds/
	$(BIN)/python -m scaleml_operator.api.reference README.md

.PHONY: lint
lint: venv ## ruff, mypy and the import layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: unit
unit: venv ## Unit tests only: no control plane needed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: venv control-plane lint ## Everything: set-up, lint and the whole test suite
	SCALEML_REQUIRE_CONTROL_PLANE=1 $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## Benchmarks: training loop vs a hand-written one; Triton serving vs a baseline, and the capture proxy
	$(BIN)/python bench/training.py
	$(BIN)/python bench/serving.py

.PHONY: clean
clean: ## Remove the virtual environment and caches (the control-plane cache stays)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
