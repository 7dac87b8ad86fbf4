# Convenience targets; each one installs what it needs through scripts/bootstrap (run as root).
.PHONY: setup demo test lint ci install man deb fuzz fuzz-policy fuzz-symbols bench

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
	.venv/bin/ruff check bpfloader tests fuzz bench
	.venv/bin/ruff format --check bpfloader tests fuzz bench
	.venv/bin/mypy

ci:
	.ci/run

install:
	scripts/install

# `make man`: the man page and the bash and zsh completions, made from the argument parser
# (scripts/manual) into share/, which is committed: run it after changing a command or an
# option (tests/packaging/test_manual.py fails until then). install takes them from share/.
man: setup
	.venv/bin/python scripts/manual share

# `make deb`: bpfloader_VERSION_all.deb here, built with debhelper and dh-python from debian/
# (scripts/build-deb); `apt install ./bpfloader_*_all.deb` installs it (README, "Running at boot").
deb:
	scripts/bootstrap deb

# `make fuzz [FUZZ_RUNS=1000000] [FUZZ_ARGS=-max_total_time=3600]`: the object reader under
# atheris, seeded with every object the tests build (fuzz/build_seeds.py); not run in CI (the
# short deterministic run is tests/obj/test_reader_fuzz.py). Findings go to fuzz/findings/.
FUZZ_RUNS ?= 1000000
FUZZ_ARGS ?=
fuzz: setup
	.venv/bin/pip install -q -e '.[fuzz]'
	.venv/bin/python fuzz/build_seeds.py build/fuzz/seeds
	mkdir -p build/fuzz/corpus
	PYTHONPATH=. .venv/bin/python fuzz/fuzz_reader.py build/fuzz/corpus build/fuzz/seeds \
		-runs=$(FUZZ_RUNS) -print_final_stats=1 $(FUZZ_ARGS)

# `make fuzz-policy [FUZZ_RUNS=...] [FUZZ_ARGS=...]`: the policy file's reader, likewise (seeds
# in fuzz/policy_seeds; the short run in CI is tests/loader/test_policy_fuzz.py).
fuzz-policy: setup
	.venv/bin/pip install -q -e '.[fuzz]'
	mkdir -p build/fuzz/policy_corpus
	PYTHONPATH=. .venv/bin/python fuzz/fuzz_policy.py build/fuzz/policy_corpus fuzz/policy_seeds \
		-runs=$(FUZZ_RUNS) -print_final_stats=1 $(FUZZ_ARGS)

# `make fuzz-symbols [FUZZ_RUNS=...] [FUZZ_ARGS=...]`: the uprobe symbol reader
# (bpfloader/client/symbols.py), likewise (the short run in CI is tests/client/test_symbols.py).
fuzz-symbols: setup
	.venv/bin/pip install -q -e '.[fuzz]'
	PYTHONPATH=. .venv/bin/python fuzz/build_seeds.py --binaries build/fuzz/symbol_seeds
	mkdir -p build/fuzz/symbol_corpus
	PYTHONPATH=. .venv/bin/python fuzz/fuzz_symbols.py build/fuzz/symbol_corpus build/fuzz/symbol_seeds \
		-runs=$(FUZZ_RUNS) -print_final_stats=1 $(FUZZ_ARGS)

# `make bench [BENCH_ARGS="--rounds 11 --json build/bench/result.json --profile"]`: bpfloader
# against a one-process C loader on libbpf (bench/libbpf_loader.c, built by the bench; needs
# libbpf-dev) and a loop of `bpftool prog loadall`, on a generated corpus, with the issue's
# targets (bench/README.md); root, a minute or two. `--no-floor` measures a loader without
# `load --stats-json`.
BENCH_ARGS ?=
bench: setup
	.venv/bin/python bench/load_bench.py $(BENCH_ARGS)
