# Build and test entry points of the appconsistent.snapshots collection.
#
#   make test      everything below, stopping at the first failing stage, then checking that
#                  the run left nothing outside the tree (tests/tools/hygiene.py)
#   make help      the list of targets
#
# `make test` works from a fresh clone: it creates the Python environments, installs the
# pinned tools and the Debian packages the tests need, and lays the collection out under
# build/collections. Each step is skipped when it is already done, so a second run only tests.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules --no-print-directory

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/tests/tools
BUILD := $(ROOT)/build
RESULTS := $(BUILD)/test-results

# The development environment: the newest ansible-core this machine can run.
PYTHON_VERSION := 3.13
PYTHON ?=
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python

# The oldest supported environment: keeps requires_ansible in meta/runtime.yml honest.
PYTHON_MIN_VERSION := 3.11
PYTHON_MIN ?=
VENV_MIN := $(ROOT)/.venv-min
PY_MIN := $(VENV_MIN)/bin/python

# Where playbooks, ansible-doc and the tests find the collection (a link to this tree).
# ansible-test runs in a fresh copy of the files git knows, one per run (build/sanity.*), so
# that runs side by side do not pull the tree from under each other.
COLLECTIONS := $(BUILD)/collections
# Molecule installs the collection it tests, and keeps its scenarios' state, under ANSIBLE_HOME
# (by default ~/.ansible, where it would replace the user's own copy of the collection).
MOLECULE_HOME := $(BUILD)/molecule

# Debian packages the tests need: fsfreeze and losetup (util-linux), the file systems the
# e2e tests and the twin's block store create. Stages that need more append to these.
DEB_PACKAGES := util-linux e2fsprogs xfsprogs
# The roles are tested against real database servers (tests/roles); the freeze helper and the
# unmount path also on btrfs subvolumes (btrfs-progs).
DEB_PACKAGES_E2E := $(DEB_PACKAGES) btrfs-progs mariadb-server mariadb-client postgresql shellcheck
# Without shellcheck, ansible-test skips its shellcheck test instead of failing.
DEB_PACKAGES_SANITY := shellcheck
# The consistency_scripts scenario runs the database profiles' scripts, which call the clients.
DEB_PACKAGES_MOLECULE := $(DEB_PACKAGES_SANITY) mariadb-client postgresql-client
# The HTML report is checked in headless Chromium.
DEB_PACKAGES_INTEGRATION := $(DEB_PACKAGES) chromium

# Every Python that pyenv holds, so that ansible-test also checks the module-side code
# (compile, import) on each supported target Python it finds.
PYENV_ROOT ?= $(HOME)/.pyenv
empty :=
space := $(empty) $(empty)
PYENV_BINS := $(subst $(space),:,$(strip $(wildcard $(PYENV_ROOT)/versions/3.*/bin)))

PYTEST_TIMEOUT := 300
# The integration tests wait on the twins' agents and on ansible-playbook start-up far more than they
# compute, so several run side by side even on 2 cores (each test starts its own twins on free ports).
INTEGRATION_WORKERS ?= 4
# Sets per path in the database consistency tests: 20 application-consistent ones per path are the proof,
# crash-consistent ones only a comparison. `make e2e E2E_DB_SETS=3 E2E_DB_CRASH_SETS=3` for a quick run.
E2E_DB_SETS ?= 20
E2E_DB_CRASH_SETS ?= 10
# Runs of the kill soak (tests/e2e/test_db_soak.py) in make test; `make soak` runs SOAK_RUNS of each path.
E2E_SOAK_RUNS ?= 1
SOAK_RUNS ?= 50
SOAK_SEED ?= 20261207
# The workloads that break crash-consistent copies (tests/e2e/test_db_workloads.py): a reduced run in
# `make e2e`, the full proof in `make consistency-proof` (sets per path, seconds of latency baseline).
E2E_DB_WORKLOAD_SETS ?= 2
PROOF_SETS ?= 20
PROOF_BASELINE ?= 60
PYTEST_ENV := ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) COVERAGE_FILE=$(BUILD)/.coverage
COVERAGE := --cov=plugins --cov-report=term-missing:skip-covered --cov-report=xml:$(BUILD)/coverage.xml

# True when PYTHON runs inside the virtual environment DIR (not a base interpreter that a
# stray bin/python link points to). An environment without its stamp file was not made by
# this Makefile (or its set-up failed half-way) and is made anew.
is_venv = $(1) -c 'import os, sys; sys.exit(os.path.realpath(sys.prefix) != os.path.realpath("$(2)"))' 2>/dev/null

# TEST_BESIDE stages run in the background beside the first stages of TEST_STAGES
# (tests/tools/make_test.sh says which); they must share no state with them. sanity, lint and
# docs-lint start no twin and change nothing as root; molecule starts its twins on ephemeral ports,
# keeps its files in its own directories (MOLECULE_HOME, /run/appconsistent-molecule-*) and uses no
# loop device. They run beside unit, unit-min and twin-test, whose waits are generous, and are
# done before the integration and e2e tests' real timeouts start.
TEST_BESIDE := sanity lint docs-lint molecule
# integration|e2e: the integration tests run beside the e2e tests at a lower CPU priority. The e2e tests spend most
# of their time waiting on real deadlines (freeze windows, watchdogs, database servers) and keep the CPU whenever
# they want it; the integration tests, which wait on nothing real, use the rest.
TEST_STAGES := unit unit-min twin-test integration|e2e changelog-lint

.PHONY: help test check setup venv venv-min deb collections sanity sanity-ignores lint docs-lint unit unit-min twin-test \
	integration e2e molecule soak changelog-lint twin demo bench consistency-proof clean

help:
	@echo "make test            every stage below: $(TEST_BESIDE) beside $(TEST_STAGES); then the hygiene check"
	@echo "make check           the quick loop: sanity of the changed files, unit, integration of the changed modules"
	@echo "make sanity          ansible-test sanity (no ignore entries allowed)"
	@echo "make lint            ansible-lint --profile production"
	@echo "make docs-lint       antsibull-docs lint-collection-docs: module, filter and role documentation"
	@echo "make unit            unit and packaging tests, with coverage of plugins/"
	@echo "make unit-min        unit tests on the oldest supported ansible-core ($(VENV_MIN))"
	@echo "make twin-test       tests of the twin clouds"
	@echo "make integration     integration and playbook tests against the twin clouds"
	@echo "make molecule        every molecule scenario of the roles"
	@echo "make e2e             end-to-end and role tests on loop devices and real databases (needs root)"
	@echo "make soak            runs of the freeze and unmount paths killed at random instants (SOAK_RUNS=$(SOAK_RUNS) of each); build/soak"
	@echo "make consistency-proof  $(PROOF_SETS) sets per path on the workloads that break crash consistency; figures in build/test-results/db_workloads.json"
	@echo "make changelog-lint  antsibull-changelog lint"
	@echo "make twin            run the twin clouds (ARGS=... are passed on)"
	@echo "make bench           the benchmarks (BENCH_ARGS=... are passed on); results in build/bench"
	@echo "make demo            a fleet-wide consistent backup, a restore and its verification, on the twin clouds"
	@echo "make clean           remove build/ and the environments"

test:
	@MAKE="$(MAKE)" $(TOOLS)/make_test.sh $(ROOT) $(PY) "$(TEST_BESIDE)" "$(TEST_STAGES)"

# Everything the stages need installed, done once before the hygiene check's first look at the
# machine (the Debian packages write to /etc and /run themselves).
setup: venv venv-min collections
	@$(TOOLS)/ensure_deb.sh $(sort $(DEB_PACKAGES_E2E) $(DEB_PACKAGES_SANITY) $(DEB_PACKAGES_MOLECULE) $(DEB_PACKAGES_INTEGRATION))

# --- environments -------------------------------------------------------------------------

venv: $(VENV)/.installed

$(VENV)/.installed: tests/requirements.txt
	@python=$$($(TOOLS)/find_python.sh $(PYTHON_VERSION) $(PYTHON)); \
	if [ ! -e $@ ] || ! $(TOOLS)/find_python.sh $(PYTHON_VERSION) $(PY) >/dev/null 2>&1 || ! $(call is_venv,$(PY),$(VENV)); then \
		echo "creating $(VENV) with $$python"; \
		rm -rf $(VENV); "$$python" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	@touch $@

venv-min: $(VENV_MIN)/.installed

$(VENV_MIN)/.installed: tests/requirements-min.txt tests/requirements-min-collections.txt
	@python=$$($(TOOLS)/find_python.sh $(PYTHON_MIN_VERSION) $(PYTHON_MIN)); \
	if [ ! -e $@ ] || ! $(TOOLS)/find_python.sh $(PYTHON_MIN_VERSION) $(PY_MIN) >/dev/null 2>&1 || ! $(call is_venv,$(PY_MIN),$(VENV_MIN)); then \
		echo "creating $(VENV_MIN) with $$python"; \
		rm -rf $(VENV_MIN); "$$python" -m venv $(VENV_MIN); \
	fi
	$(PY_MIN) -m pip install --quiet --disable-pip-version-check -r tests/requirements-min.txt
	$(PY_MIN) $(TOOLS)/install_bundled_collections.py tests/requirements-min-collections.txt $(BUILD)/cache amazon.aws
	@touch $@

deb:
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES)

bench: venv collections deb
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(PY) tests/bench/runner.py --out $(BUILD)/bench $(BENCH_ARGS)

demo: venv collections deb
	@if [ "$$(id -u)" -ne 0 ]; then echo "make demo must run as root: it loop-mounts and freezes the demo volume." >&2; exit 1; fi
	cd $(ROOT) && ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH="$(VENV)/bin:$$PATH" $(PY) $(TOOLS)/demo.py

collections: venv
	@$(PY) $(TOOLS)/stage_collection.py link $(COLLECTIONS)

# --- stages -------------------------------------------------------------------------------

sanity-ignores:
	@entries=$$(cat tests/sanity/ignore-*.txt 2>/dev/null | grep -v -E '^[[:space:]]*(#|$$)' || true); \
	if [ -n "$$entries" ]; then \
		echo "tests/sanity/ignore-*.txt must stay empty; fix these findings instead:"; \
		echo "$$entries"; \
		exit 1; \
	fi

# SANITY_TARGETS="PATH..." limits the tests to those files (make check passes the changed ones).
sanity: venv sanity-ignores
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_SANITY)
	@$(PY) $(TOOLS)/prepare_ansible_test.py
	@mkdir -p $(BUILD); \
	root=$$(mktemp -d $(BUILD)/sanity.XXXXXX); \
	trap 'rm -rf "$$root"' EXIT; \
	$(PY) $(TOOLS)/stage_collection.py copy "$$root"; \
	tree="$$root/ansible_collections/appconsistent/snapshots"; \
	echo "ansible-test sanity in $$tree"; \
	cd "$$tree" && ANSIBLE_TEST_CONTENT_ROOT="$$tree" PATH="$(VENV)/bin:$(PYENV_BINS):$$PATH" \
		$(VENV)/bin/ansible-test sanity --local --color no $(SANITY_TARGETS)

lint: venv collections
	cd $(ROOT) && ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH="$(VENV)/bin:$$PATH" $(VENV)/bin/ansible-lint --profile production --offline --nocolor

# The documentation as a docsite renders it: schemas, markup and references of every module, filter and role.
# antsibull-docs copies each collection it needs with `git ls-files` when the collection lies in a Git work
# tree; the ceiling keeps Git from taking the venv's amazon.aws for part of this repository (where it is ignored,
# so nothing of it would be copied).
docs-lint: venv collections
	cd $(COLLECTIONS)/ansible_collections/appconsistent/snapshots && GIT_CEILING_DIRECTORIES=$(VENV) \
		ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH="$(VENV)/bin:$$PATH" $(VENV)/bin/antsibull-docs lint-collection-docs \
		--plugin-docs --validate-collection-refs=dependent --disallow-unknown-collection-refs .

unit: venv collections deb
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) unit \
		--timeout=$(PYTEST_TIMEOUT) --junitxml=$(RESULTS)/unit.xml $(COVERAGE) -- tests/unit tests/packaging

unit-min: venv-min collections deb
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV_MIN)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY_MIN) unit-min \
		--timeout=$(PYTEST_TIMEOUT) --junitxml=$(RESULTS)/unit-min.xml -- tests/unit

twin-test: venv collections deb
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) twin-test \
		-n $(INTEGRATION_WORKERS) --timeout=$(PYTEST_TIMEOUT) --junitxml=$(RESULTS)/twin-test.xml -- tests/twin/tests

integration: venv collections deb
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_INTEGRATION)
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) integration \
		-n $(INTEGRATION_WORKERS) --timeout=$(PYTEST_TIMEOUT) --junitxml=$(RESULTS)/integration.xml \
		-- tests/integration tests/playbooks tests/bench/test_bench_smoke.py

e2e: venv collections
	@if [ ! -e tests/e2e ] && [ ! -e tests/roles ]; then echo "[e2e] tests/e2e and tests/roles do not exist yet: nothing to test"; exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "make e2e must run as root: it creates loop devices, mounts and freezes file systems, and starts database servers." >&2; \
		exit 1; \
	fi; \
	$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_E2E); \
	cd $(ROOT) && $(PYTEST_ENV) APPCONSISTENT_DB_SETS=$(E2E_DB_SETS) APPCONSISTENT_DB_CRASH_SETS=$(E2E_DB_CRASH_SETS) \
		APPCONSISTENT_SOAK_RUNS=$(E2E_SOAK_RUNS) APPCONSISTENT_DB_WORKLOAD_SETS=$(E2E_DB_WORKLOAD_SETS) \
		PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) e2e \
		--timeout=$(PYTEST_TIMEOUT) --junitxml=$(RESULTS)/e2e.xml -- tests/e2e tests/roles

# The kill soak alone, with its own count and seed; the outcome of every run goes to build/soak/soak-SEED.json.
soak: venv collections
	@if [ "$$(id -u)" -ne 0 ]; then echo "make soak must run as root: it freezes loop-mounted file systems." >&2; exit 1; fi
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_E2E)
	cd $(ROOT) && $(PYTEST_ENV) APPCONSISTENT_SOAK_RUNS=$(SOAK_RUNS) APPCONSISTENT_SOAK_SEED=$(SOAK_SEED) PATH="$(VENV)/bin:$$PATH" \
		$(PY) -m pytest -p no:cacheprovider --timeout=$(PYTEST_TIMEOUT) tests/e2e/test_db_soak.py

# The full consistency proof: application against crash-consistent sets on the workloads that break the
# latter, with the latency the quiescing costs (docs/consistency.md holds the figures of a run).
consistency-proof: venv collections
	@if [ "$$(id -u)" -ne 0 ]; then echo "make consistency-proof must run as root: it creates loop devices, freezes file systems and starts database servers." >&2; exit 1; fi
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_E2E)
	cd $(ROOT) && $(PYTEST_ENV) APPCONSISTENT_DB_WORKLOAD_SETS=$(PROOF_SETS) APPCONSISTENT_DB_BASELINE=$(PROOF_BASELINE) \
		PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) consistency-proof -s \
		--junitxml=$(RESULTS)/consistency-proof.xml -- tests/e2e/test_db_workloads.py

molecule: venv collections
	@$(TOOLS)/ensure_deb.sh $(DEB_PACKAGES_MOLECULE)
	@found=0; \
	for config in $(wildcard $(ROOT)/roles/*/molecule/*/molecule.yml $(ROOT)/extensions/molecule/*/molecule.yml); do \
		found=1; \
		scenario_dir=$$(dirname "$$config"); scenario=$$(basename "$$scenario_dir"); \
		project=$$(dirname "$$(dirname "$$scenario_dir")"); \
		echo "[molecule] $${project#$(ROOT)/}: scenario $$scenario"; \
		( cd "$$project" && ANSIBLE_HOME=$(MOLECULE_HOME) ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) PATH="$(VENV)/bin:$$PATH" NO_COLOR=1 PY_COLORS=0 \
			$(VENV)/bin/molecule test -s "$$scenario" ) || exit 1; \
	done; \
	if [ "$$found" = 0 ]; then echo "[molecule] no molecule scenario yet: nothing to test"; fi

changelog-lint: venv
	cd $(ROOT) && $(VENV)/bin/antsibull-changelog lint
	cd $(ROOT) && $(VENV)/bin/antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml

# The quick loop: sanity of the changed files, the unit tests, and the integration tests of the
# modules the change reaches (tests/tools/changed_tests.py); CHECK_BASE=REV compares against REV.
check: venv collections
	@files=$$($(PY) $(TOOLS)/changed_tests.py files $(CHECK_BASE)); \
	tests=$$($(PY) $(TOOLS)/changed_tests.py integration $(CHECK_BASE)); \
	echo "=== make check: $$(echo "$$files" | grep -c . || true) changed files"; \
	if [ -n "$$files" ]; then $(MAKE) sanity SANITY_TARGETS="$$(echo $$files)"; fi; \
	cd $(ROOT) && $(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) unit -q \
		--timeout=$(PYTEST_TIMEOUT) -- tests/unit; \
	if [ -n "$$tests" ]; then \
		echo "=== integration tests of the changed modules:" $$tests; \
		$(PYTEST_ENV) PATH="$(VENV)/bin:$$PATH" $(TOOLS)/pytest_stage.sh $(PY) integration -q \
			-n $(INTEGRATION_WORKERS) --timeout=$(PYTEST_TIMEOUT) -- $$tests; \
	else \
		echo "=== no module changed: no integration test to run"; \
	fi

# --- tools --------------------------------------------------------------------------------

twin: venv collections deb
	cd $(ROOT)/tests && ANSIBLE_COLLECTIONS_PATH=$(COLLECTIONS) $(PY) -m twin $(ARGS)

clean:
	rm -rf $(BUILD) $(VENV) $(VENV_MIN) $(ROOT)/tests/output $(ROOT)/.pytest_cache
