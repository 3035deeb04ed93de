# TwitterSnake: every target builds what it needs from a clean clone.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
# Debian packages the sandbox, the tests and the benchmark use on this machine (chromium: the
# report test renders the HTML in a real browser; systemd-container: systemd-nspawn boots the sandbox host).
DEBIAN_PACKAGES := debootstrap systemd-container openssh-client openssh-server git curl iproute2 util-linux procps ca-certificates zstd chromium

export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Tools the targets run (ansible-playbook, moto_server...) come from the virtualenv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.DEFAULT_GOAL := venv

## help: this list, one line per target (from the `## target: ...` line above each)
help:
	@awk '/^## [a-z-]+: / { sub(/^## /, ""); split($$0, p, ": "); printf "  %-20s %s\n", p[1], substr($$0, length(p[1]) + 3) }' $(MAKEFILE_LIST)

.PHONY: help venv debian-packages test test-fast lint bench demo demo-down sandbox-preflight sandbox-image sandbox-wheelhouse lock clean

## venv: the virtualenv .venv/ from requirements.txt (rebuilt when it changes)
venv: $(STAMP)

# --no-compile: byte-compiling ansible's ~30,000 files took half of the install (86 s -> 41 s here);
# Python compiles what it imports when it first imports it.
$(STAMP): requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile -r requirements.txt
	rm -f $(VENV)/.installed-* && touch $@

# Installs only what is missing, after an `apt-get update`.
## debian-packages: the Debian packages the sandbox, tests and bench use (apt-get, as root)
debian-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "error: missing Debian packages ($$missing); run as root or: sudo apt-get install $$missing" >&2; exit 1; fi; \
	  echo "Installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Four workers (pytest-xdist) on two cores: most tests wait on timers, servers and subprocesses, not
# the CPU. A test module's tests on one worker; the sandbox modules are one unit, started first,
# sharing one sandbox (tests/conftest.py).
PYTEST_PARALLEL := -n 4 --dist loadfile --no-loadscope-reorder

# The whole suite: what CI runs (.ci/run).
## test: the whole suite, all four tiers (what CI runs after lint)
test: venv debian-packages
	$(PY) -m pytest $(PYTEST_PARALLEL) tests

# The inner loop: unit and integration tests (stand-in + moto), without those that wait on real timers (slow).
## test-fast: the inner loop: tests/unit and tests/integration without the slow tests
test-fast: venv debian-packages
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow" tests/unit tests/integration

## lint: ruff, mypy (collector/, mypy.ini), yamllint and ansible-lint
lint: venv
	$(VENV)/bin/ruff check collector tests roles
	$(VENV)/bin/ruff format --check collector tests roles
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint --strict .
	$(VENV)/bin/ansible-lint --offline --profile production

# BENCH_ARGS="--posts 1000000" or "--slow-s3 10"; prints posts/s, MB/s, ratio to curl|gzip, peak RSS,
# CPU seconds per million posts (collector and curl|gzip) and what that sustains on a t3.micro.
## bench: the collector against curl | gzip -1 (BENCH_ARGS="--posts 1000000" or "--slow-s3 10")
bench: venv debian-packages
	$(PY) -m tests.bench.bench $(BENCH_ARGS)

# The whole thing on this machine: the sandbox (moto, X stand-in, a Debian host), site.yml, what landed in S3.
# The independent steps run in parallel: Debian packages then the Debian root; the venv then the wheelhouse.
# It ends when the collector is RUNNING and the first object is in S3.
## demo: the sandbox (moto, X stand-in, a Debian host), then site.yml against it
demo: sandbox-preflight
	@$(MAKE) --no-print-directory -j4 sandbox-image sandbox-wheelhouse
	$(PY) -m tests.sandbox up
	$(VENV)/bin/ansible-playbook site.yml -i inventory/sandbox -e @.sandbox/vars.json
	$(PY) -m tests.sandbox report

# The instance's pip packages, every one pinned `==` with its sha256 (uv pip compile --generate-hashes),
# resolved for the instance: Linux x86_64 and the Python the sandbox host stands in for conda-forge's
# python=3.11 (tests/sandbox/miniforge.py INSTANCE_PYTHON; the lowest 3.11 the instance may have).
# The notebook's lock is resolved within the collector's (-c): both go into one environment with
# --no-deps. A version already in a lock stays unless an input needs another: LOCK_ARGS=--upgrade
# moves every package to its newest release. uv runs from a throwaway virtualenv (not requirements.txt).
UV_VERSION := 0.13.8
LOCK_PYTHON := 3.11.2
LOCK_COMPILE = "$$tools/bin/uv" pip compile --quiet --generate-hashes --custom-compile-command "make lock" --python-version $(LOCK_PYTHON) \
	--python-platform x86_64-unknown-linux-gnu $(LOCK_ARGS)
NOTEBOOK_FILES := roles/notebook/files
## lock: regenerate the hash-locked requirements the instance installs (collector/, roles/notebook/files/)
lock:
	@tools=$$(mktemp -d /tmp/twittersnake-lock.XXXXXX) && trap 'rm -rf "$$tools"' EXIT && \
	python3 -m venv "$$tools" && \
	"$$tools/bin/pip" install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	$(LOCK_COMPILE) collector/requirements.in -o collector/requirements.lock && \
	$(LOCK_COMPILE) $(NOTEBOOK_FILES)/requirements.in -c collector/requirements.lock -o $(NOTEBOOK_FILES)/requirements.lock && \
	echo "collector/requirements.lock: $$(grep -c '^[a-z0-9]' collector/requirements.lock) packages;" \
	  "$(NOTEBOOK_FILES)/requirements.lock: $$(grep -c '^[a-z0-9]' $(NOTEBOOK_FILES)/requirements.lock) packages"

# The sandbox's caches in /var/cache/twittersnake (kept by demo-down): the Debian root (stdlib python3
# is enough, so it does not wait for the venv) and the wheelhouse the instance installs from.
## sandbox-image: the sandbox's cached Debian root in /var/cache/twittersnake
sandbox-image: debian-packages
	python3 -m tests.sandbox.image

## sandbox-wheelhouse: the sandbox's cached wheelhouse the instance installs from
sandbox-wheelhouse: venv
	$(PY) -m tests.sandbox.miniforge

# Stops everything `make demo` started and removes .sandbox/ (the Debian root cache in /var/cache/twittersnake stays).
## demo-down: stop everything make demo started and remove .sandbox/ (caches stay)
demo-down:
	@if [ -x $(PY) ] && [ -d .sandbox ]; then $(PY) -m tests.sandbox down; else rm -rf .sandbox; fi

## sandbox-preflight: refuse in one line unless root on Linux
sandbox-preflight:
	@if [ "$$(uname -s)" != Linux ] || [ "$$(id -u)" != 0 ]; then \
	  echo "error: make demo needs root on Linux (it builds a throwaway Debian host with debootstrap and boots it with systemd-nspawn); run: sudo make demo" >&2; \
	  exit 1; fi

## clean: remove .venv/ and the tools' caches
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
