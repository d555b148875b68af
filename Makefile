# Two commands work from a bare clone: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit jaeger bench clean

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

unit: $(STAMP) jaeger
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
