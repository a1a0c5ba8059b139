# chordrec: `make train` (fresh clone -> finished, logged run) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build on this machine; on a GPU machine install your CUDA torch into .venv first
# (the check below keeps any torch that is already there).
TORCH_SPEC ?= torch==2.13.0
SHARED_DATA := ../shared/datasets/rwc-pop
DATA_DIR := data/rwc-pop
OOD_DIR := data/ood-synth
SYNTH_TRAIN_DIR := data/synth-train
# Data source: $CHORDREC_DATA_SOURCE, else the shared copy beside the checkout, else GitHub.
DATA_SOURCE ?= $(or $(CHORDREC_DATA_SOURCE),$(if $(wildcard $(SHARED_DATA)/SHA256SUMS),$(SHARED_DATA),github))
ARGS ?=

.PHONY: help install lock data train study table ui server test test-system test-fast lint bench bench-transcription bench-startup bench-tracking bench-launchers gpu-check clean-venv

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

# Every extra and the dev tools, at the exact versions of requirements.lock (torch by
# version: the build already in .venv, CPU or CUDA, is kept when its version matches).
EXTRAS ?= all,dev
LOCK := requirements.lock

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q -c $(LOCK) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed  ## create .venv: torch first, then chordrec (editable) with every extra and the dev tools, as locked

# A fresh venv with the newest releases that pyproject.toml's floors allow (torch: TORCH_SPEC,
# e.g. TORCH_SPEC=torch for the newest), frozen into requirements.lock; then `make test`.
LOCK_VENV := .lock-venv

lock:  ## regenerate requirements.lock from a fresh venv (newest allowed releases; TORCH_SPEC=... for torch)
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(LOCK_VENV)/bin/python -m pip install -q ".[all,dev]"
	{ sed -n '/^#/p' $(LOCK); \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude chordrec | grep -v '^#' \
	    | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf $(LOCK_VENV) build
	@echo "requirements.lock refreshed: review git diff $(LOCK), then make install test"

$(DATA_DIR)/SHA256SUMS: | $(VENV)/.installed
	$(VENV)/bin/chordrec data fetch --source "$(DATA_SOURCE)" --dest $(DATA_DIR)

# The synthesized songs, one command for both sets (fluidsynth and three Debian soundfonts;
# a few minutes): the out-of-domain songs and the training songs (data=rwc_pop+synth).
# Without fluidsynth or the soundfonts it says so in one line and goes on: runs then skip
# out-of-domain scoring (ood.part=auto). SOUNDFONTS="a.sf2 b.sf2" names other soundfonts
# (default: $CHORDREC_SOUNDFONTS, else Debian's).
SOUNDFONTS ?=
$(OOD_DIR)/manifest.json $(SYNTH_TRAIN_DIR)/manifest.json &: | $(VENV)/.installed
	$(VENV)/bin/chordrec data synth --dest $(OOD_DIR) --train-dest $(SYNTH_TRAIN_DIR) --optional $(foreach f,$(SOUNDFONTS),--soundfont $(f))

data: $(DATA_DIR)/SHA256SUMS $(OOD_DIR)/manifest.json $(SYNTH_TRAIN_DIR)/manifest.json  ## RWC-Pop into data/rwc-pop (verified), synthesized out-of-domain songs into data/ood-synth and training songs into data/synth-train (need fluidsynth; skipped without)

train: install data  ## train the default experiment (ARGS="key=value ..." to override), log to mlruns/
	$(PY) -m chordrec.train $(ARGS)

study: install data  ## the report's experiments a-f as one study (2 parallel jobs), then Table 5
	$(VENV)/bin/chordrec study $(ARGS)

table: install  ## Table 5 from the newest finished runs in mlruns/ (ARGS="--study ID" ...)
	$(VENV)/bin/chordrec table $(ARGS)

ui: install  ## MLflow UI over mlruns/ on http://127.0.0.1:5000
	$(VENV)/bin/chordrec ui

server: install  ## a shared MLflow tracking server on a local PostgreSQL in mlserver/ (127.0.0.1:5000)
	$(VENV)/bin/chordrec server --postgres-dir mlserver/postgres --artifacts-dir mlserver/artifacts $(ARGS)

# The suite runs in TEST_WORKERS processes (pytest-xdist), one test file per process at a time.
TEST_WORKERS ?= 2

test: install data  ## the test suite: unit tests and short runs on the real data (not `system`)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not system" $(ARGS)

test-system: install data  ## the `system` tests: servers, Ray, a browser, parallel runs, benchmarks, a core-only install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m system $(ARGS)

test-fast: install  ## unit tests on small generated data (not `integration`, `slow` or `system`): the edit-test loop
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not integration and not slow and not system" $(ARGS)

lint: install  ## ruff, and the layers and library owners of ARCHITECTURE.md (import-linter)
	$(VENV)/bin/ruff check chordrec hydra_plugins tests
	$(VENV)/bin/ruff format --check chordrec hydra_plugins tests
	$(VENV)/bin/lint-imports --no-cache

bench: install data  ## window mode against the course's loop (ratio, one run), then training throughput per mode
	$(PY) -m chordrec.bench.training $(ARGS)

bench-transcription: install  ## transcription speed: `chordrec transcribe` end to end (one file, a folder of 50), then per stage
	$(PY) -m chordrec.bench.transcription $(ARGS)

bench-startup: install  ## start-up: the two --help commands and `chordrec transcribe` of a 1-minute song, median of 5 (ARGS="--registry")
	$(PY) -m chordrec.bench.startup $(ARGS)

bench-tracking: install data  ## tracking stores under load: SQLite, server+SQLite, server+PostgreSQL (ARGS="--runs 4")
	$(PY) -m chordrec.bench.tracking $(ARGS)

bench-launchers: install data  ## one tiny sweep (8 jobs) through joblib, then a local Ray: overhead per job (ARGS="--jobs 4")
	$(PY) -m chordrec.bench.launchers $(ARGS)

gpu-check: install data  ## on a GPU machine: device tests, experiment=best on CUDA, resumed on CPU, epoch times
	$(PY) -m chordrec.bench.gpu_check $(ARGS)

clean-venv:  ## remove .venv (the next make installs it again)
	rm -rf $(VENV)
