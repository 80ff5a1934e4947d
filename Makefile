# gridmgmt: `make run` (the product on a demo city) and `make test` (every test).
# Both set everything up on a fresh Debian 12 machine and are safe to run again.
SHELL := /bin/bash
VENV := .venv
STACK := scripts/stack.sh
PYTEST_ARGS ?=

.PHONY: run test up down migrate lint deps venv

deps:
	@$(STACK) deps

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

venv: deps $(VENV)/.installed

up: venv
	@$(STACK) up

migrate: up
	@eval "$$($(STACK) env)" && export DATABASE_URL REDIS_URL && $(VENV)/bin/alembic upgrade head

run: migrate
	@scripts/run.sh

test: up
	@eval "$$($(STACK) env)" && export DATABASE_URL REDIS_URL && $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

down:
	@$(STACK) down
