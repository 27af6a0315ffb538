# chexlib — the two commands of the README, plus helpers.
#
#   make run    set up (if needed) and run the notebook series on the built-in phantom data
#   make test   set up (if needed) and run the whole test suite
#
# Why make: it is the conventional entry point of research code repositories, it is on every
# Linux/macOS machine, and it lets both commands share one idempotent set-up step.
#
# Which Python: the active virtual environment ($VIRTUAL_ENV) or conda environment ($CONDA_PREFIX)
# when there is one; otherwise a local .venv, created with $(BOOTSTRAP_PYTHON) on first use.
# The package and its test extra are (re)installed when pyproject.toml is newer than the stamp
# file in that environment, or with `make install`.

BOOTSTRAP_PYTHON ?= python3
PRESET ?= default
ARGS ?=

ifdef VIRTUAL_ENV
  ENV_DIR := $(VIRTUAL_ENV)
else ifdef CONDA_PREFIX
  ENV_DIR := $(CONDA_PREFIX)
else
  ENV_DIR := $(CURDIR)/.venv
endif
PYTHON := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.chexlib-installed

.PHONY: run test install help

help:
	@sed -n '2,6p' Makefile

run: $(STAMP)
	$(PYTHON) -m chexlib run --preset $(PRESET) $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest $(ARGS)

install:
	rm -f $(STAMP)
	$(MAKE) $(STAMP)

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(ENV_DIR)

$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e ".[test]"
	touch $(STAMP)
