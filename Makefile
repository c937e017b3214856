# Two entry points (see README): `make demo` and `make test`.
# Outside a virtual environment the targets make and use ./.venv (a system Python that
# refuses global installs, PEP 668, is never touched); inside one they use it as it is.
ifdef VIRTUAL_ENV
PYTHON ?= python
else
VENV ?= .venv
PYTHON := $(VENV)/bin/python
endif
BIN := $(dir $(PYTHON))
PIP := $(PYTHON) -m pip
PYTEST_ARGS ?=
# pytest-timeout turns a hang into a named failure instead of a stalled run (seconds per test)
TEST_TIMEOUT ?= 600

.PHONY: install install-teacher demo test test-slow lint bench bench-speed bench-accuracy docs

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# torch first, pinned to the CPU wheel that lies on disk (a bare `torch` would pull CUDA)
install: $(if $(VIRTUAL_ENV),,$(VENV)/bin/python)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test,plot,data,torchsim,dask]"

install-teacher: install
	$(PIP) install -q -e ".[teacher,chgnet,quacc]"

# a molecule (tdn-organic) and CO on Pt(111) (tdn-catalysis), both picked by --model auto
demo: install
	$(BIN)tdn-relax examples/molecules/aspirin.xyz -o demo_relaxed.extxyz
	$(BIN)tdn-relax examples/slabs/pt111_co.xyz --fix-bottom-layers 2 -o demo_slab_relaxed.extxyz

test: install
	$(PYTHON) -m ruff check .
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -m "not slow" -n 2 --timeout $(TEST_TIMEOUT) $(PYTEST_ARGS)

test-slow: install-teacher
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -m slow -n 2 --timeout 3600 $(PYTEST_ARGS)

lint:
	$(PYTHON) -m ruff check .

# Whole benchmark set (< 30 min; the peers' venv is built once on first use): `make bench`;
# smaller settings: `make bench QUICK=1` (does not touch docs/benchmarks.md). The two halves
# are single-threaded and run side by side on the two cores; the speed tables are ratios of
# interleaved timings and the accuracy budget is process CPU time, so neither depends on
# the other running.
bench: install
	$(MAKE) -j2 --no-print-directory bench-speed bench-accuracy

bench-speed:
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/tensor_product.py $(if $(QUICK),--quick)
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/model_speed.py $(if $(QUICK),--quick,--update-docs)

bench-accuracy:
	OMP_NUM_THREADS=1 $(PYTHON) benchmarks/accuracy.py $(if $(QUICK),--quick)

# Every figure table in README.md and docs/*.md, rendered from benchmarks/results/*.json and
# models/manifest.json into its <!-- generated:NAME --> block (no model is run; seconds).
# `make docs CHECK=1` only reports stale blocks, as tests/test_docs_generated.py does.
docs: install
	$(PYTHON) benchmarks/render_docs.py $(if $(CHECK),--check)
