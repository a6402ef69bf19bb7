# Two commands set up everything on a fresh machine:
#   make demo   install into .venv, then run the pipeline on config/config.yaml (CPU demo)
#   make test   install into .venv, then run the whole test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# torch/torchvision pinned here and in pyproject.toml (segment-anything needs torchvision)
TORCH := torch==2.14.1 torchvision==0.29.1

# Debian packages the tests use: headless Chromium renders the HTML report; slurm-wlm and
# munge run a one-node SLURM cluster (tests/slurm/local-cluster.sh)
APT_PACKAGES := chromium slurm-wlm munge
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-deps demo test test-fast lint format clean benchmarks device-bundle

# install also links profiles/slurm as the Snakemake profile name `slurm` (in
# ~/.config/snakemake, or $$XDG_CONFIG_HOME/snakemake), so `snakemake --profile slurm all`
# works from the project folder; a different profile of that name is left alone
install: $(STAMP)
	@$(BIN)/sam4em install-profile --source profiles/slurm || \
		echo "(the demo and the tests do not need it; on a cluster use --profile profiles/slurm)"

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --profile profiles/local all

# both tiers run on TEST_WORKERS pytest-xdist workers; each module that shares a pipeline
# run or a module fixture stays on one worker, and each worker's torch gets its share of
# the cores (tests/xdist_groups.py, --dist loadgroup; timings in tests/README.md)
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadgroup

test: install system-deps
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(XDIST)

# the inner loop: every module's unit tests, without the tests marked slow (real pipeline
# runs, the SLURM cluster, model training; tests/README.md lists the tiers)
test-fast: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(XDIST) -m "not slow"

# what a bare GPU machine needs for benchmarks/device_check.py: the wheels its Python lacks
# and the demo stack, under 64 MiB (benchmarks/README.md has the command to type there)
device-bundle: install
	$(BIN)/python benchmarks/device_bundle.py

lint: install
	$(BIN)/ruff check sam4em tests benchmarks
	$(BIN)/ruff format --check sam4em tests benchmarks

format: install
	$(BIN)/ruff format sam4em tests benchmarks
	$(BIN)/ruff check --fix sam4em tests benchmarks

clean:
	rm -rf results .snakemake .pytest_cache
