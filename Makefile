# Two commands on a fresh machine: `make demo` and `make test`.
# Each builds the virtualenv it needs; `make test` also finds or starts a
# PostgreSQL for the tests (tools/pgtest.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HYPOTHESIS_PROFILE ?= fast

.PHONY: demo test lint typecheck check bench clean dev

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]' --config-settings editable_mode=strict
	touch $@

# The install links the layer folders into place (tools/devlink.py), so new
# modules need no reinstall. Run python with -P: the repository root holds a
# `sagalog/` folder without its sub-packages, which would shadow the install.
dev: $(VENV)/.deps
	@$(PY) tools/devlink.py

demo: dev
	$(PY) -P -m sagalog.demo

test: dev
	$(PY) tools/pgtest.py -- $(PY) -P -m pytest -q -p no:cacheprovider --hypothesis-profile=$(HYPOTHESIS_PROFILE) $(PYTEST_ARGS)

lint: dev
	$(VENV)/bin/ruff check sagalog engine storage replay tests tools bench

typecheck: dev
	cd build && ../$(VENV)/bin/mypy --config-file ../pyproject.toml --strict -p sagalog

check: lint typecheck test

bench: dev
	for b in $(or $(BENCH),$(basename $(notdir $(wildcard bench/*.py)))); do \
	  $(PY) tools/pgtest.py -- $(PY) -P bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .sagalog
