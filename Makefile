# Two commands set up everything on a fresh machine:
#   make demo   install into .venv, then run the pipeline on config/config.yaml (CPU demo)
#   make test   install into .venv, then run the whole test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch/torchvision pinned here and in pyproject.toml (segment-anything needs torchvision)
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint format clean benchmarks

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local all

test: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check sam4em tests benchmarks
	$(BIN)/ruff format --check sam4em tests benchmarks

format: install
	$(BIN)/ruff format sam4em tests benchmarks
	$(BIN)/ruff check --fix sam4em tests benchmarks

clean:
	rm -rf results .snakemake .pytest_cache
