# Two commands on a fresh machine: `make run` and `make test`.
.PHONY: run test test-postgres lint bench bench-decode fuzz fault-test bench-load bench-metrics setup browsers

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
