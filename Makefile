# hyperhive: `make up` runs the example hive here; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PKG := pkgs/hyperhive
STAMP := $(VENV)/.installed
CONFIG ?= examples/hive.toml
PYTEST_ARGS ?=

.PHONY: up test deps venv bench bench-quick clean help

help:
	@echo "make up          set up a virtualenv and run the example hive ($(CONFIG)); Ctrl-C stops it"
	@echo "make test        set up and run every test (Python, browser, Nix parse/eval checks)"
	@echo "make bench       run the benchmarks and print their figures"
	@echo "make clean       remove the virtualenv and the example hive's state"

$(STAMP): $(PKG)/pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '$(PKG)[test]'
	@touch $@

venv: $(STAMP)

# System packages the tests need: Debian's chromium (browser tests) and nix-bin (Nix parse/eval checks).
deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v nix-instantiate >/dev/null || missing="$$missing nix-bin"; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

up: $(STAMP)
	$(VENV)/bin/hyperhive up --config $(CONFIG)

test: deps $(STAMP)
	cd $(PKG) && ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python $(PKG)/benchmarks/broker.py
	$(VENV)/bin/python $(PKG)/benchmarks/dashboard.py
	$(VENV)/bin/python $(PKG)/benchmarks/harness.py

bench-quick: $(STAMP)
	$(VENV)/bin/python $(PKG)/benchmarks/broker.py --quick

clean:
	rm -rf $(VENV) examples/state
