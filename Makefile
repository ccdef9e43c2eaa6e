# Every target installs what it needs first, so a fresh clone needs only Python 3.11+ and a JDK.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PF_HOME ?= $(CURDIR)/.pf_home
export DAGSTER_HOME ?= $(PF_HOME)/dagster
# Spark workers must run the project's interpreter, or mapInPandas cannot import pyarrow.
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python

CHROMIUM := /usr/bin/chromium

.PHONY: install browser demo test dev bench bench-partition lint clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/pf-platform demo

# The UI test drives Debian's Chromium through playwright (which never downloads a browser here).
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "the UI test needs Debian's chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; \
	fi

test: install browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Figures, not pass/fail timings: each benchmark prints what it measured.
bench: install bench-partition
	$(BIN)/python -m pf_platform.bench.wallets
	$(BIN)/python -m pf_platform.bench.transfers

# One whole payout day, landing files to ledger, at 200K and 2M label rows; exits 1 when the money
# paid disagrees with the ledger, the sandbox or the dataset.
bench-partition: install
	$(BIN)/python -m pf_platform.bench.partition --rows 200000,2000000

dev: install
	$(BIN)/pf-platform dev

lint: install
	$(BIN)/ruff check pf_platform pf_platform_tests
	$(BIN)/ruff format --check pf_platform pf_platform_tests

clean:
	rm -rf $(VENV) .pf_home
