# gridmgmt: `make run` (the product on a demo city) and `make test` (every test).
# Both set everything up on a fresh Debian 12 machine and are safe to run again.
SHELL := /bin/bash
VENV := .venv
STACK := scripts/stack.sh
# Two xdist workers: most of the suite waits (servers starting, browsers, PostgreSQL), so two
# processes on this 2-core machine finish sooner than one; an idle worker takes tests queued
# for the other (worksteal), so the slow ones at the end do not run alone.
# `make test PYTEST_ARGS=` runs it in one process.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: run test up down migrate lint deps venv translations catalogue

deps:
	@$(STACK) deps

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

venv: deps $(VENV)/.installed translations

# The compiled catalogues Flask-Babel reads (git-ignored), rebuilt when a .po changes.
I18N := gridmgmt/translations
translations: $(I18N)/zh/LC_MESSAGES/messages.mo

$(I18N)/%/LC_MESSAGES/messages.mo: $(I18N)/%/LC_MESSAGES/messages.po $(VENV)/.installed
	$(VENV)/bin/pybabel -q compile -d $(I18N) -l $* --statistics

# After changing messages in the code or templates: extract them all and merge them into each
# .po (new ones untranslated, changed ones fuzzy); then translate and run the tests.
catalogue: $(VENV)/.installed
	$(VENV)/bin/pybabel -q extract -F babel.cfg --project=gridmgmt -o $(I18N)/messages.pot .
	$(VENV)/bin/pybabel -q update -i $(I18N)/messages.pot -d $(I18N)

up: venv
	@$(STACK) up

# Migrations run as the tables' owner (MIGRATE_DATABASE_URL); after them the app's role is given
# exactly its privileges (gridmgmt/kernel/roles.py). The app itself never sees the owner's URL.
migrate: up
	@eval "$$($(STACK) env)" && export MIGRATE_DATABASE_URL REDIS_URL \
		&& $(VENV)/bin/alembic upgrade head

run: migrate translations
	@scripts/run.sh

# The test apps connect as the app role too; the fixtures migrate and seed as the owner.
test: up translations
	@eval "$$($(STACK) env)" && export DATABASE_URL MIGRATE_DATABASE_URL REDIS_URL \
		&& $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

down:
	@$(STACK) down
