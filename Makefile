# Two commands work from a bare clone: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck package unit jaeger bench clean matrix matrix-ci

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,langchain]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# Jaeger v2 for the end-to-end tests, built from the Go module proxy into .cache/jaeger/ (once;
# later runs reuse it). Without Go this only says so, and the e2e tests skip with the reason.
jaeger:
	@bash scripts/build-jaeger.sh >/dev/null || { status=$$?; \
		if [ $$status -eq 3 ]; then echo "make jaeger: Go not found; Jaeger e2e tests will skip"; \
		else exit $$status; fi; }

# The sdist and the wheel as PyPI would get them, built into an ignored directory; twine checks
# their metadata and the README as PyPI renders it; then the wheel goes into a fresh virtualenv
# with only its core dependencies and runs every Python block of the README there.
DIST := .cache/dist
package: $(STAMP)
	rm -rf $(DIST)
	$(BIN)/python -m build --quiet --outdir $(DIST) .
	$(BIN)/twine check --strict $(DIST)/*
	$(BIN)/python scripts/check_wheel.py $(DIST)

unit: $(STAMP) jaeger
	$(BIN)/pytest

# The dependency matrix (scripts/matrix.py): uv resolves the lowest version of every direct
# dependency (the floors of pyproject.toml) and the newest, on Python 3.10 and 3.13, plus openai
# 1.x, 2.x and 3.x; each cell gets a virtualenv of its own under .cache/matrix/ and runs a part of
# the suite; a table of passed and failed tests per cell ends the output. Tens of minutes.
matrix: $(STAMP)
	$(BIN)/python scripts/matrix.py

# CI's share of it: the floors, on this Python, with the retry scenarios (a couple of minutes).
matrix-ci: $(STAMP)
	$(BIN)/python scripts/matrix.py --ci

test: lint typecheck package unit matrix-ci

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
