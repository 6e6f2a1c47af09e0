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
# A real node beside it (tests/node): container runtime, CNI plugins and cluster DNS, pinned and cached.
CONTAINERD_VERSION ?= v2.4.2
RUNC_VERSION ?= v1.5.3
CNI_PLUGINS_VERSION ?= v1.10.0
COREDNS_VERSION ?= v1.15.0
NODE_DIR ?= $(HOME)/.cache/scaleml/node/containerd-$(CONTAINERD_VERSION)
export SCALEML_NODE_DIR := $(NODE_DIR)
# Debian packages the node needs: libseccomp's headers to build runc; iptables for kube-proxy; socat
# to relay the API server to the pods; a static busybox and debootstrap for the test images.
NODE_PACKAGES := libseccomp-dev pkg-config iptables socat busybox-static debootstrap

# Tools the monitoring tests run, pinned and cached outside the repository.
TOOLS_DIR ?= $(HOME)/.cache/scaleml/tools
# promtool from Debian's prometheus source package (trixie); a new version needs its new checksums.
PROMTOOL_VERSION ?= 2.53.3+ds1-2
PROMTOOL_SHA256_amd64 ?= ff27654eacc95abd846d344e91fe4ba3b4f0588a50d606ed1d2f09ad3408722f
PROMTOOL_SHA256_arm64 ?= cc1d5889b4d2e2ef92a6984039d88c11993ad3c73f5e74acd3ee15adaefb764c
PROMTOOL := $(TOOLS_DIR)/promtool-$(PROMTOOL_VERSION)/promtool
export SCALEML_PROMTOOL := $(PROMTOOL)
# The Prometheus Operator's CRDs, generated from its Go API types as its own release does.
PROMETHEUS_OPERATOR_VERSION ?= v0.95.1
CONTROLLER_TOOLS_VERSION ?= v0.20.0
PROMETHEUS_CRDS_DIR ?= $(TOOLS_DIR)/prometheus-operator-$(PROMETHEUS_OPERATOR_VERSION)
export SCALEML_PROMETHEUS_CRDS := $(PROMETHEUS_CRDS_DIR)

# Image tags: the operator's defaults (operator/scaleml_operator/config.py) and manifests/ name the same.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
OPERATOR_IMAGE ?= scaleml/operator:$(VERSION)
WORKLOADS_IMAGE ?= scaleml/workloads:$(VERSION)
DOCKER ?= docker

PYTEST_ARGS ?=

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,workloads,local,dev]'
	touch $@

.PHONY: venv
venv: $(BIN)/.installed ## Create the virtual environment with the operator and the dev tools

.PHONY: demo
demo: venv ## Train, serve, monitor and retrain on this machine (CPU, no cluster), in a few minutes
	$(BIN)/scaleml demo

.PHONY: control-plane
control-plane: ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (cached)
	K8S_VERSION=$(K8S_VERSION) ETCD_VERSION=$(ETCD_VERSION) KWOK_VERSION=$(KWOK_VERSION) \
		OUT=$(CONTROL_PLANE_DIR) hack/build-control-plane.sh

.PHONY: node
node: control-plane ## Build containerd, runc, the CNI plugins and CoreDNS for a real node (cached; installs Debian packages: needs root)
	@dpkg -s $(NODE_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q && apt-get install -y -q --no-install-recommends $(NODE_PACKAGES); }
	CONTAINERD_VERSION=$(CONTAINERD_VERSION) RUNC_VERSION=$(RUNC_VERSION) CNI_PLUGINS_VERSION=$(CNI_PLUGINS_VERSION) \
		COREDNS_VERSION=$(COREDNS_VERSION) OUT=$(NODE_DIR) hack/build-node.sh

.PHONY: node-images
node-images: venv node ## Fetch the real node's Debian base (debootstrap, cached); its tests pack the images from it and this checkout
	$(BIN)/python -m tests.support.node.workload_image

.PHONY: cluster
cluster: venv control-plane ## Run the test control plane with KWOK nodes, the CRDs and the operator until Ctrl-C; prints the KUBECONFIG
	$(BIN)/python -m tests.support.cluster

.PHONY: cluster-node
cluster-node: venv node-images ## As `make cluster`, on one real node where pods run (root): the demo's manifests train, serve and monitor
	$(BIN)/python -m tests.support.cluster --real-node

.PHONY: promtool
promtool: ## Install promtool from Debian's prometheus package into ~/.cache/scaleml/tools (cached)
	VERSION=$(PROMTOOL_VERSION) SHA256_amd64=$(PROMTOOL_SHA256_amd64) SHA256_arm64=$(PROMTOOL_SHA256_arm64) \
		OUT=$(PROMTOOL) hack/install-promtool.sh

.PHONY: prometheus-crds
prometheus-crds: ## Generate the Prometheus Operator's CRDs into ~/.cache/scaleml/tools (cached)
	VERSION=$(PROMETHEUS_OPERATOR_VERSION) CONTROLLER_TOOLS_VERSION=$(CONTROLLER_TOOLS_VERSION) \
		OUT=$(PROMETHEUS_CRDS_DIR) hack/prometheus-crds.sh

.PHONY: chromium
chromium: ## Install Debian's headless-capable Chromium, in which a test renders the drift report (needs root)
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

.PHONY: images
images: ## Build the operator and workload container images
	$(DOCKER) build -f Dockerfile -t $(OPERATOR_IMAGE) .
	$(DOCKER) build -f workloads.Dockerfile -t $(WORKLOADS_IMAGE) .

.PHONY: crds
crds: venv ## Regenerate crds/ and the reference pages in docs/reference/ from the API models
	$(BIN)/scaleml crds crds/
	$(BIN)/python -m scaleml_api.reference docs/reference/

.PHONY: lint
lint: venv ## ruff, mypy and the import layering contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: unit
unit: venv promtool ## Unit tests only: no control plane needed
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

.PHONY: test
test: venv control-plane node node-images promtool prometheus-crds chromium lint ## Everything: set-up, lint and the whole test suite
	SCALEML_REQUIRE_CONTROL_PLANE=1 $(BIN)/pytest $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## Benchmarks: training loop vs a hand-written one; Triton serving vs a baseline, and with capture on vs off; drift statistics vs SciPy and Evidently; the operator at 100-1,000 objects vs their plain children
	$(BIN)/python bench/training.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/operator.py

.PHONY: clean
clean: ## Remove the virtual environment and caches (the control-plane cache stays)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
