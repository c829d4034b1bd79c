# Two commands on a fresh machine: `make run` and `make test`.
.PHONY: run test test-postgres lint bench bench-decode fuzz fault-test bench-load bench-metrics bench-workbench screenshots setup browsers

setup:
	bash scripts/bootstrap.sh

run: setup
	.venv/bin/miatari serve

test: setup
	bash scripts/test.sh

test-postgres: setup
	MIATARI_TEST_DB=postgres bash scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup
	.venv/bin/python -m bench.matcher

bench-decode: setup
	.venv/bin/python -m bench.decode

fuzz: setup
	.venv/bin/python scripts/fuzz.py

fault-test: setup
	bash scripts/fault-test.sh

bench-metrics: setup
	.venv/bin/python -m bench.metrics

bench-load: setup
	.venv/bin/python -m bench.load

bench-workbench: setup
	bash scripts/browser.sh
	.venv/bin/python -m bench.workbench

# The README's screenshots, made by the end-to-end tests (packaged faces only).
screenshots: setup
	bash scripts/browser.sh
	.venv/bin/miatari migrate >/dev/null
	MIATARI_SCREENSHOTS=docs/screenshots MIATARI_REQUIRE_BROWSER=1 .venv/bin/python -m pytest -n 0 -p no:randomly tests/e2e
