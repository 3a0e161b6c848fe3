# The two set-up commands of the README are `make up` and `make test`.
VENV := .venv
VOS := $(VENV)/bin/vos
PYTEST := $(VENV)/bin/pytest

.PHONY: bootstrap up down test test-fast test-staging-extended lint help

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.bootstrapped: pyproject.toml app/pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh

bootstrap: $(VENV)/.bootstrapped ## install system packages and the venv

up: bootstrap ## boot the local staging VM and deploy deploys/full.py to it
	$(VOS) staging up --deploy

down: bootstrap ## destroy the staging VM and everything it created
	$(VOS) staging destroy

test: bootstrap ## lint, then every test tier (the staging VM's beside the unit and integration tiers)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m devtools.tiers

test-fast: bootstrap ## lint, unit and integration tiers only (no VM)
	$(VENV)/bin/ruff check .
	$(PYTEST) tests -m "not staging"

test-staging-extended: bootstrap ## the staging tier with every throwaway-VM test and the burn-down drill
	VOS_STAGING_EXTENDED=1 VOS_STAGING_BURN_DOWN=1 $(PYTEST) tests/staging --durations=30
