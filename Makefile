# Two commands on a fresh machine (see README):
#   make run    set up the virtual environment and run the main job (quickstart sweep)
#   make test   set up the virtual environment and run the tests (the default suite: not slow)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -m "not learning and not slow"
# The glucose environment's simulator; its own pins (old gym, gymnasium 0.29) clash with ours, so
# it is installed without dependencies (its run-time needs are in requirements.txt).
SIMGLUCOSE := simglucose==0.2.11

.PHONY: setup run test test-slow test-all test-learning clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(SIMGLUCOSE)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/fttpo sweep tune_configs/quickstart.yaml

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -m "slow and not learning"

test-learning: setup
	$(PY) -m pytest -m learning

test-all: setup
	$(PY) -m pytest -m ""

clean:
	rm -rf $(VENV) .pytest_cache
