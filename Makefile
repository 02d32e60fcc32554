# rehost: `make demo` sets everything up and runs the seed's migration; `make test` runs the tests.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := .venv/bin/pytest
PG_DIR := /tmp/rehost-pg-test

.PHONY: deps demo test test-fast lint coverage-doc bench clean

deps:
	@scripts/install-deps.sh

demo: deps
	$(PY) -m rehost.cli.main demo --work-dir $(CURDIR)/.cache/demo

# The whole suite: unit, API (SQLite and PostgreSQL), replication, conversion and end-to-end VMs.
test: deps
	@mkdir -p .cache && scripts/pg-test-cluster.sh start $(PG_DIR) > .cache/pg-test.url
	@trap 'scripts/pg-test-cluster.sh stop $(PG_DIR)' EXIT; \
	REHOST_TEST_DATABASE_URL="$$(cat .cache/pg-test.url)" $(PYTEST) -q -ra $(PYTEST_ARGS)

# The fast suite: everything but the slow end-to-end tests.
test-fast: deps
	$(PYTEST) -q -ra -m "not slow" $(PYTEST_ARGS)

lint:
	.venv/bin/ruff check src tests
	.venv/bin/mypy src/rehost

coverage-doc:
	$(PY) scripts/implementation_coverage.py > IMPLEMENTATION_COVERAGE.md

clean:
	rm -rf .venv .cache test-artifacts
