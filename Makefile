# corral: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.corral-installed
SYSTEM_STAMP := $(VENV)/.corral-system-tools

.PHONY: demo test lint bench chaos install system-tools bytecode clean node-image e2e

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "corral needs Python 3.11 or newer")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Debian tools the tests run for real (drbdadm dry runs, qemu, htools, the RAPI
# client). Installed with apt only when root; otherwise a clear message and the
# tests that need a missing tool are skipped with that tool's name.
system-tools: $(SYSTEM_STAMP)

$(SYSTEM_STAMP): scripts/ensure-system-tools $(STAMP)
	@bash scripts/ensure-system-tools
	@touch $(SYSTEM_STAMP)

# Where PYTHONDONTWRITEBYTECODE is set (as on this project's machines) Python
# keeps no compiled modules, and every `corral` command compiled corral's own
# again (about 0.2 s each). Compiled here for the commands the demo and the
# bench time; a changed source is simply compiled again when imported.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q events reactors orchestrator simulators bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The linters and the suite on both cores (scripts/run-tests says how): the CPU-bound
# unit and parity tests beside the etcd, lab and real tests, then the tests marked
# `serial` alone; every part's report is printed and any failing fails make test.
test: $(STAMP) system-tools
	@bash scripts/run-tests

bench: $(STAMP) system-tools bytecode
	$(BIN)/python -m pytest -q -m slow
	$(BIN)/python -m bench
	nice -n 5 $(BIN)/python -m pytest -q -s -m e2e tests/e2e

chaos: $(STAMP) system-tools
	CHAOS_MINUTES=$(MINUTES) CHAOS_LENGTH=$(LENGTH) $(BIN)/python -m tests.chaos_main $(or $(SEEDS),20) $(FIRST)

# The Debian node image real-node tests boot (root; cached under var/node-image,
# rebuilt when its recipe changes): prints where it is, its size and build time.
node-image: $(STAMP)
	nice -n 10 $(BIN)/python -m devtools.nodevm.image

# Real node VMs (root): node add/check against a real host, the end-to-end
# failover on real DRBD, and a real guest (NIC, OS image) booted, live-migrated and
# failed over on them. `-s`: the tests print their timings, the heal timeline and
# the guest's console. Minutes; not part of `make test`.
e2e: $(STAMP) system-tools
	nice -n 5 $(BIN)/python -m pytest -q -s -m e2e tests/e2e

demo: $(STAMP) system-tools bytecode
	$(BIN)/python -m devtools.demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
