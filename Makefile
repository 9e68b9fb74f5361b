# Greenlight: `make run` starts the whole stack on 127.0.0.1, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
RUN_PACKAGES := redis-server etcd-server etcd-client haproxy chromium
# kubectl (the install and localcluster tests): Debian's kubernetes-client when no kubectl is
# on PATH; one already there (a newer release, say) is kept.
KUBECTL_PACKAGE := $(if $(shell command -v kubectl),,kubernetes-client)
# prometheus: the metrics test scrapes a web server and HAProxy with Debian's Prometheus.
# docker-registry: tag suggestions and registry polling are tested against a real registry.
TEST_PACKAGES := $(RUN_PACKAGES) docker-compose curl openssl postgresql-15 prometheus docker-registry $(KUBECTL_PACKAGE)

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test lint format venv system-run system-test clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

venv: $(STAMP)

# Installs the Debian packages that are missing (as root), or names them and stops.
define install_debian
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Greenlight needs these Debian packages:$$missing"; \
	    echo "Install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

system-run:
	$(call install_debian,$(RUN_PACKAGES))

system-test:
	$(call install_debian,$(TEST_PACKAGES))

# umask 077: everything the stack writes under the var dir is private (0600, folders 0700).
run: system-run venv
	@umask 077 && GREENLIGHT_DEBUG=1 $(PY) -m launcher.stack prepare
	@umask 077 && GREENLIGHT_DEBUG=1 $(PY) manage.py migrate --noinput -v 0
	@umask 077 && GREENLIGHT_DEBUG=1 $(PY) manage.py collectstatic --noinput -v 0
	@umask 077 && GREENLIGHT_DEBUG=1 $(PY) manage.py bootstrap
	@GREENLIGHT_DEBUG=1 $(PY) -m launcher.stack banner
	@umask 077 && GREENLIGHT_DEBUG=1 exec $(PY) -m launcher.supervisor Procfile

# Every test on PostgreSQL 15 (the tests start their own server), as production runs;
# then the concurrency tests (marked both_databases) again on SQLite, `make run`'s default.
# Most tests wait on servers rather than compute, so each run spreads its test files over
# PYTEST_WORKERS pytest-xdist workers (a file stays on one worker, which sets up its module
# and session fixtures once); PYTEST_WORKERS=0 runs everything in one process. Tests that
# fail beside the other workers (timing under the load of three stacks on two cores) run
# once more alone, named in the output: a test that fails alone too fails the target.
# Both runs always run, and a failure in either fails the target.
PYTEST_WORKERS ?= 3
PYTEST_FLAGS := -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)
RERUN_ALONE := -q -p no:randomly --last-failed --last-failed-no-failures none -rA
define run_tests
	echo "$(1) $(PY) -m pytest $(PYTEST_FLAGS) $(2)"; \
	if ! env $(1) $(PY) -m pytest $(PYTEST_FLAGS) $(2); then \
	  echo "make test: the tests that failed on $(3) run again, alone:"; \
	  env $(1) $(PY) -m pytest $(RERUN_ALONE) $(2) || failed="$$failed $(3)"; \
	fi
endef
test: system-test venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@failed=""; \
	$(call run_tests,GREENLIGHT_TEST_DATABASE=postgresql,,PostgreSQL); \
	$(call run_tests,GREENLIGHT_TEST_DATABASE=sqlite,-m both_databases,SQLite); \
	if [ -n "$$failed" ]; then echo "make test: tests failed on:$$failed"; exit 1; fi

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf var/
