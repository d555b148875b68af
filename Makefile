# Two commands work from a bare clone: `make demo` and `make test`. Each creates .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck package unit jaeger redis chromium screenshot bench clean matrix matrix-ci

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

# redis-server for the fleet tests (tests/fleet/): Debian's package, installed where it is missing
# and the machine allows it (root and apt-get). Without it this only says so, and those tests skip
# with the reason.
redis:
	@bash scripts/install-redis.sh >/dev/null || { status=$$?; \
		if [ $$status -eq 3 ]; then echo "make redis: no redis-server; Redis fleet tests will skip"; \
		else exit $$status; fi; }

# Headless Chromium (Debian's `chromium`) for the Jaeger UI test and `make screenshot`: installed
# with apt-get where it is missing and we are root; otherwise this only says so (the test skips).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		if [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make chromium: installing Debian's chromium"; \
			mkdir -p .cache; { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -q chromium; } >.cache/apt-chromium.log 2>&1 \
				|| { tail -n 20 .cache/apt-chromium.log; exit 1; }; \
		else echo "make chromium: no chromium and no root apt-get; the Jaeger UI test will skip"; fi; }

# The README's picture of a retried call in the Jaeger UI, docs/images/retried-call.png: the demo
# against the e2e Jaeger serving the real UI (third_party/jaeger-ui), shot in headless Chromium.
screenshot: $(STAMP) jaeger chromium
	$(BIN)/python scripts/screenshot.py

# The sdist and the wheel as PyPI would get them, built into an ignored directory; twine checks
# their metadata and the README as PyPI renders it; then the wheel goes into a fresh virtualenv
# with only its core dependencies and runs every Python block of the README there.
DIST := .cache/dist
package: $(STAMP)
	rm -rf $(DIST)
	$(BIN)/python -m build --quiet --outdir $(DIST) .
	$(BIN)/twine check --strict $(DIST)/*
	$(BIN)/python scripts/check_wheel.py $(DIST)

unit: $(STAMP) jaeger redis chromium
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
