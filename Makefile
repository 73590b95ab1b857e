# crawl2chat: `make demo` and `make test` are all a fresh clone needs (each creates .venv if missing).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
DAGSTER_PORT ?= 3000
MLFLOW_PORT ?= 5000
SERVE_PORT ?= 8000
MODEL ?= crawl2chat@best
DEMO_PAGES ?= 800
DEMO_CRAWL ?= CC-MAIN-2099-01

# Every CLI run, the UI and the tests share one instance, so runs show up in the UI.
export DAGSTER_HOME := $(CURDIR)/dagster_home
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/dagster_home/mlflow.db
export CRAWL2CHAT_MLFLOW_ARTIFACTS ?= $(CURDIR)/dagster_home/mlartifacts
export CRAWL2CHAT_LAKE ?= $(CURDIR)/lake
export PYSPARK_PYTHON := $(CURDIR)/$(PY)

.PHONY: install demo test test-all ui services chat serve bench gpu-check clean

install: $(STAMP)

# torch is pinned to its CPU build for the embedded default (constraints-cpu.txt); the stamp makes a
# second call quick and is redone when the project's dependencies change.
$(STAMP): pyproject.toml constraints-cpu.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-cpu.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	@# The python tool runs model code only inside bubblewrap (Debian's bubblewrap); without it the tool
	@# refuses (fail closed). Root with apt-get installs it; anyone else is told how.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -qq bubblewrap || { apt-get update -qq && apt-get install -y -qq bubblewrap; }; } >/dev/null 2>&1; } \
	  || echo "note: bubblewrap is not installed, so the python tool stays disabled: sudo apt-get install bubblewrap"
	@# DeepSpeed compiles its CPU all-reduce op (shm comm) at the first training launch, ~40-75 s on 2
	@# cores: built here, once per environment (importing `training` points torch's extension cache
	@# into the venv), so no demo or test run pays for it.
	@$(PY) -c "import training; from deepspeed.accelerator import get_accelerator as a; b = a().create_op_builder('ShareMemCommBuilder'); b and b.load()" \
	  >/dev/null 2>&1 || echo "note: DeepSpeed's CPU comm op did not build now; the first training launch builds it"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m assets.demo --pages $(DEMO_PAGES) --crawl $(DEMO_CRAWL)

# The README's test command; CI (.ci/run) calls exactly this. pytest exits 5 when no test ran.
# `extended` tests (multi-host kill/resume runs and the Postgres nightly-queue run, ~15 min) are left to `make test-all`. One process ran
# the suite at ~1 busy core of 2 (it waits on subprocesses, JVMs and services), so two xdist workers
# take a file each (--dist loadfile keeps a module's fixtures in one worker).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -m "not extended" -n $(TEST_WORKERS) --dist loadfile --durations=25

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# Dagster (webserver + daemon) and the MLflow UI under one launcher: Ctrl-C stops both within seconds.
ui: $(STAMP)
	$(PY) -m assets.ui --host $(HOST) --dagster-port $(DAGSTER_PORT) --mlflow-port $(MLFLOW_PORT) --serve-port $(SERVE_PORT)

# The production shape on loopback (Postgres, an MLflow tracking server on it, a Spark standalone
# cluster and Spark Connect): prints URLs and the env file to source; Ctrl-C stops them all.
services: $(STAMP)
	$(PY) -m pipelines.services_cli

# Talk to a model: a registered MLflow model (NAME@ALIAS, NAME/VERSION) or an export directory.
chat: $(STAMP)
	$(VENV)/bin/crawl2chat chat --model $(MODEL)

serve: $(STAMP)
	$(VENV)/bin/crawl2chat serve --model $(MODEL) --host $(HOST) --port $(SERVE_PORT)

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The first run on a GPU machine: the five training jobs for a few steps each, then gpt2-124m pretraining
# (ZeRO-0/1/2), SFT's packed step and rollouts timed; JSON out. Without CUDA it says so and exits 0.
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf lake dagster_home/storage dagster_home/history dagster_home/schedules dagster_home/*.db dagster_home/mlartifacts dagster_home/logs
