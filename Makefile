# The two set-up commands of the README: `make install`, then `make test`.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Lab hosts (debootstrap + systemd-nspawn), their network (nftables, iproute2), SSH, zstd archives;
# pebble: the ACME test server (and its DNS) the Let's Encrypt tests issue certificates from.
# apt-utils, gnupg: the signed local apt repository that stands in for NVIDIA's in the GPU tests.
APT_PACKAGES := debootstrap systemd-container nftables iproute2 openssh-client zstd curl ca-certificates pebble apt-utils gnupg
PYTHON ?= python3

# The lab tests need root: as another user, pytest runs through sudo with this same interpreter.
PYTHON_BIN := $(shell command -v $(PYTHON))
RUN_TESTS := $(if $(SUDO),$(SUDO) env CI="$$CI" PATH="$$PATH" PYTHONPATH="$$PYTHONPATH" $(PYTHON_BIN),$(PYTHON)) -m pytest
COVERED := ollastack.orchestrate ollastack.cli ollastack.cloud

.PHONY: install check test test-unit coverage docs
install:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -e '.[test]'

# Lint and types: clean, or `make test` (and so CI) stops here.
check:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

# The quick loop: no root, no lab hosts.
test-unit:
	$(PYTHON) -m pytest -q tests/unit

# Everything, as CI runs it: check, then every test (the lab ones need root), on two pytest-xdist workers.
# Two, not one per core: each lab module boots its own hosts, and two at once is what 2 cores carry;
# a lab module runs whole on one worker, the slowest first (tests/support/lab_groups.py).
test: check
	$(RUN_TESTS) -v -rs --durations=15 -n 2 --dist loadgroup --no-loadscope-reorder

# Line coverage of the control-machine modules by the tests that need no lab (the lab covers the hosts).
coverage:
	$(PYTHON) -m pytest -q tests/unit $(foreach m,$(COVERED),--cov=$(m)) --cov-report=term-missing

# After adding or changing a setting: regenerate the README table and stack.example.toml.
docs:
	$(PYTHON) tools/write_docs.py .
