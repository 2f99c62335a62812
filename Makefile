# Two commands for a new user: `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST := .venv/bin/pytest
PYBABEL := .venv/bin/pybabel
# Catalogue keywords: _ / gettext / ngettext (defaults), lazy labels, strings marked where defined, notifications,
# navigation labels.
BABEL_KEYWORDS := -k _l -k N_ -k Message -k add_nav:2 -k NotFound -k Conflict -k Forbidden -k ValidationFailed -k Unauthorized -k TooManyRequests -k PayloadTooLarge -k UnsupportedMediaType -k MfaLocked -k MalformedBody -k InvalidQuery -k _invalid:2
PO_FILES := $(wildcard app/translations/*/LC_MESSAGES/messages.po)
MO_FILES := $(PO_FILES:.po=.mo)

.PHONY: run test test-pg test-sqlite install lint bench fuzz clean translations

run: install ## migrate, seed the demo on first run, serve everything at http://127.0.0.1:5000
	.venv/bin/hospital run

test: install tests/npm/node_modules/.installed tests/npm/ohif/node_modules/.installed ## the whole suite on PostgreSQL, then the smoke suite on SQLite
	$(PYTEST)
	TEST_DB=sqlite $(PYTEST) -m smoke

install: .venv/.installed $(MO_FILES)

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

translations: .venv/.installed ## re-extract every marked string, merge it into each catalogue, compile them
	$(PYBABEL) extract -F babel.cfg $(BABEL_KEYWORDS) --no-location --sort-output --no-wrap -o app/translations/messages.pot .
	$(PYBABEL) update -i app/translations/messages.pot -d app/translations --no-fuzzy-matching --ignore-obsolete --no-wrap
	$(PYBABEL) compile -d app/translations --statistics

app/translations/%/LC_MESSAGES/messages.mo: app/translations/%/LC_MESSAGES/messages.po .venv/.installed
	$(PYBABEL) compile -d app/translations -l $* --statistics

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
