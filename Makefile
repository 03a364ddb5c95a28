# `make test` is the README's test command: installs the package with its test extra into the
# active Python environment, lints, type-checks and runs every test against real servers.
PY ?= python

.PHONY: install test lint typecheck run

install:
	$(PY) -m pip install --quiet -e '.[test]'

lint:
	$(PY) -m ruff check broker tests benchmarks

typecheck:
	$(PY) -m mypy

test: install lint typecheck
	$(PY) -m pytest -q

run:
	$(PY) -m pip install --quiet -e '.[local]'
	broker run -c configs/local.yaml
