# Two commands for a new user: `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST := .venv/bin/pytest

.PHONY: run test test-pg test-sqlite install lint bench fuzz clean

run: install ## migrate, seed the demo on first run, serve everything at http://127.0.0.1:5000
	.venv/bin/hospital run

test: install tests/npm/node_modules/.installed tests/npm/ohif/node_modules/.installed ## the whole suite on PostgreSQL, then the smoke suite on SQLite
	$(PYTEST)
	TEST_DB=sqlite $(PYTEST) -m smoke

install: .venv/.installed

.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen
	@touch $@

tests/npm/node_modules/.installed: tests/npm/package.json tests/npm/package-lock.json
	npm ci --prefix tests/npm --no-audit --no-fund --ignore-scripts
	@touch $@

tests/npm/ohif/node_modules/.installed: tests/npm/ohif/package.json tests/npm/ohif/package-lock.json
	npm ci --prefix tests/npm/ohif --no-audit --no-fund --ignore-scripts
	@touch $@

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

lint: install
	.venv/bin/ruff check app media storage migrations tests benchmarks wsgi.py

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := dicom_header stow_multipart zip_ingest signaling pickup_and_qr oauth_params

fuzz: install ## coverage-guided fuzzing (atheris) of each untrusted-input parser for FUZZ_SECONDS each
	@for t in $(FUZZ_TARGETS); do echo "== $$t"; \
	  .venv/bin/python -m tests.fuzz.targets $$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    -artifact_prefix=test-artifacts/fuzz-$$t- -print_final_stats=1 || exit 1; done

bench: install ## speed and memory figures (not part of make test)
	@for b in benchmarks/*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done

clean:
	rm -rf .venv .tools .pytest_cache test-artifacts
