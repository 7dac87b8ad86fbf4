# Convenience targets; each one installs what it needs through scripts/bootstrap (run as root).
.PHONY: setup demo test lint ci

setup:
	scripts/bootstrap setup

demo:
	scripts/bootstrap demo

test:
	scripts/bootstrap test

lint: setup
	.venv/bin/ruff check bpfloader tests
	.venv/bin/ruff format --check bpfloader tests
	.venv/bin/mypy

ci:
	.ci/run
