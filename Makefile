# Leadflow: two commands. `make run` (local stack) and `make test` (the full suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check --quiet
PORT   ?= 8000
HAS_PG := $(shell $(PYTHON) -c 'from core.testing.pgcluster import find_bindir; print(int(find_bindir() is not None))' 2>/dev/null)

.PHONY: run test lint typecheck test-sqlite test-postgres bench-deps clean

## run: create .venv, install, migrate, load demo data, start web + worker + scheduler
run: $(VENV)/.run-deps .env
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	exec $(PY) manage.py devstack --port $(PORT)

## test: lint, type-check, the suite on SQLite, then on a throwaway PostgreSQL
test: lint typecheck test-sqlite test-postgres

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .

typecheck: $(VENV)/.dev-deps
	DEBUG=true ENV_FILE= $(VENV)/bin/mypy .

test-sqlite: $(VENV)/.dev-deps
	TEST_DATABASE=sqlite $(PY) -m pytest

test-postgres: $(VENV)/.dev-deps
ifeq ($(HAS_PG)$(CI),0)
	@echo "PostgreSQL server binaries not found: Postgres run not done here (CI=true installs them and requires it)"
else
	TEST_DATABASE=postgres $(PY) -m pytest
endif

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: requirements.txt | $(VENV)/bin/python
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PIP) install -r requirements-dev.txt
	touch $@ $(VENV)/.run-deps

# Local development settings, generated once and never committed.
.env:
	@$(PYTHON) -c 'import secrets; print("DEBUG=true\nSECRET_KEY=" + secrets.token_urlsafe(50))' > $@
	@echo "wrote .env (DEBUG=true and a random SECRET_KEY, for local use only)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
