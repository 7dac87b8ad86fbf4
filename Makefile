# Convenience targets; each one installs what it needs through scripts/bootstrap (run as root).
.PHONY: setup demo test lint ci install

# `make install [DESTDIR=root] [PREFIX=/usr/local] [PYTHON=/usr/bin/python3]`: the package, the
# systemd units, the journal catalog, /etc/default/bpfloader (see scripts/install).
PREFIX ?= /usr/local
PYTHON ?= /usr/bin/python3
export DESTDIR PREFIX PYTHON

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

install:
	scripts/install
