# hyperhive: `make up` runs the example hive here; `make test` runs every test. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PKG := pkgs/hyperhive
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed
CONFIG ?= examples/hive.toml
PYTEST_ARGS ?=
# make test runs the tests in this many pytest-xdist worker processes, each test file on one worker (its
# module-scoped services and browser shared there). Most of a test's time is spent waiting on real processes (the
# Claude Code CLI, the service, Chromium, nix-instantiate): on two cores, three workers still leave CPU idle (the
# whole suite: about 700 s in one process, 420 s with two workers, 360 s with three on a busy machine). Every test
# has its own directories, sockets and loopback ports. PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 3
# nixpkgs' lib/ directory (e.g. an extract of nix-community/nixpkgs.lib): when set, test_nix.py also evaluates the
# modules with lib.evalModules, the flake's outputs with the real lib, and a real meta flake.
NIXPKGS_LIB ?=
# The npm packages the tests need, each pinned here and nowhere else, go into one project-local prefix:
# the Claude Code CLI the tests run (npm installs it and its platform binary, an optionalDependency), and axe-core
# (the accessibility checks of the browser tests).
TOOLS := .tools
NPM_PREFIX := $(TOOLS)/npm
CLAUDE_CODE_VERSION := 2.1.328
CLAUDE_PREFIX := $(NPM_PREFIX)
CLAUDE := $(CLAUDE_PREFIX)/bin/claude
CLAUDE_STAMP := $(CLAUDE_PREFIX)/.claude-code-$(CLAUDE_CODE_VERSION)
AXE_CORE_VERSION := 4.14.1
AXE := $(NPM_PREFIX)/lib/node_modules/axe-core/axe.min.js
AXE_STAMP := $(NPM_PREFIX)/.axe-core-$(AXE_CORE_VERSION)

.PHONY: up test deps venv claude axe bench bench-quick clean help

help:
	@echo "make up          set up a virtualenv and run the example hive ($(CONFIG)); Ctrl-C stops it"
	@echo "make test        set up and run every test (Python, browser, Nix parse/eval checks)"
	@echo "make bench       run the benchmarks: each figure with its target and whether it was met (bench-quick: a short run)"
	@echo "make clean       remove the virtualenv and the example hive's state"

# What running needs (make up): the package and its runtime dependencies, nothing of the tests'. No pip upgrade:
# the venv's own pip installs an editable pyproject package.
$(RUN_STAMP): $(PKG)/pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '$(PKG)'
	@touch $@

# What the tests need besides (make test, make venv): pytest, hypothesis, the browser driver.
$(STAMP): $(RUN_STAMP) $(PKG)/pyproject.toml
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '$(PKG)[test]'
	@touch $@

venv: $(STAMP)

# System packages the tests need: Debian's chromium (browser tests), nix-bin (Nix parse/eval checks), and nodejs
# with npm (to install the pinned npm packages).
deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v nix-instantiate >/dev/null || missing="$$missing nix-bin"; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The pinned Claude Code CLI. Its postinstall copies the platform binary over bin/claude.exe; where npm did not run
# it (scripts disabled), it is run here. The stamp is named after the version, so changing the pin reinstalls.
$(CLAUDE_STAMP):
	@rm -f $(CLAUDE_PREFIX)/.claude-code-*
	npm install --global --prefix $(CLAUDE_PREFIX) --no-audit --no-fund --loglevel=error \
	  @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	@$(CLAUDE) --version >/dev/null 2>&1 || \
	  (cd $(CLAUDE_PREFIX)/lib/node_modules/@anthropic-ai/claude-code && node install.cjs)
	@version="$$($(CLAUDE) --version)"; case "$$version" in \
	  "$(CLAUDE_CODE_VERSION) "*) touch $@ ;; \
	  *) echo "$(CLAUDE) says '$$version', not $(CLAUDE_CODE_VERSION)" >&2; exit 1 ;; esac

claude: deps $(CLAUDE_STAMP)

# The pinned axe-core, beside the CLI in the same prefix; the stamp is named after the version, too.
$(AXE_STAMP):
	@rm -f $(NPM_PREFIX)/.axe-core-*
	npm install --global --prefix $(NPM_PREFIX) --no-audit --no-fund --loglevel=error axe-core@$(AXE_CORE_VERSION)
	@version="$$(node -p 'require("./$(NPM_PREFIX)/lib/node_modules/axe-core/package.json").version')"; \
	  if [ "$$version" = "$(AXE_CORE_VERSION)" ]; then touch $@; else \
	  echo "$(NPM_PREFIX) has axe-core $$version, not $(AXE_CORE_VERSION)" >&2; exit 1; fi

axe: deps $(AXE_STAMP)

up: $(RUN_STAMP)
	$(VENV)/bin/hyperhive up --config $(CONFIG)

test: deps $(STAMP) $(CLAUDE_STAMP) $(AXE_STAMP)
	@echo "Claude Code CLI: $$($(CLAUDE) --version) ($(CLAUDE))"
	cd $(PKG) && HYPERHIVE_CLAUDE="$(abspath $(CLAUDE))" HYPERHIVE_AXE="$(abspath $(AXE))" \
	  $(if $(NIXPKGS_LIB),HYPERHIVE_NIXPKGS_LIB="$(abspath $(NIXPKGS_LIB))") \
	  ../../$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile \
	  $(PYTEST_ARGS)

# Each benchmark prints its figures with their targets and whether each was met (ratios measured in one run).
BENCH_ARGS ?=
bench: $(STAMP) $(CLAUDE_STAMP)
	$(VENV)/bin/python $(PKG)/benchmarks/broker.py $(BENCH_ARGS)
	$(VENV)/bin/python $(PKG)/benchmarks/dashboard.py $(BENCH_ARGS)
	HYPERHIVE_CLAUDE="$(abspath $(CLAUDE))" $(VENV)/bin/python $(PKG)/benchmarks/harness.py $(BENCH_ARGS)
	$(VENV)/bin/python $(PKG)/benchmarks/mcp.py $(BENCH_ARGS)

bench-quick:
	$(MAKE) bench BENCH_ARGS=--quick

clean:
	rm -rf $(VENV) $(TOOLS) examples/state
