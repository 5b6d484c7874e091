# Two commands for a newcomer: `make run` and `make test`. Each creates the
# virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SLURM_PLUGINS := $(VENV)/slurm-plugins
CORES ?= all

.PHONY: run test test-fast lint bench dag clean-results help

help:
	@echo "make run   - the whole default study (CPU model organisms) end to end"
	@echo "make test  - the test suite, in a random order (pytest-randomly; the seed is printed)"
	@echo "make test-fast - the tests not marked slow: the edit-test loop"
	@echo "make lint  - ruff + lint-imports (the layering contract) + snakemake --lint"
	@echo "make dag   - regenerate docs/rulegraph.svg"
	@echo "make bench - every benchmark vs its target -> results/bench/*.json + BENCHMARKS.md (~45 min;"
	@echo "             GRIDS=dir keeps the synthetic aggregation grids there: ~20 min on later runs)"

# torch first, pinned, from the CPU wheel: any other spec pulls a multi-GB CUDA build.
# The SLURM executor plugin (pyproject.toml's `slurm` extra) goes beside the venv, off its
# import path: only tests/test_slurm.py puts $(SLURM_PLUGINS) on PYTHONPATH, so no other
# snakemake call imports it (on import it may wait ~9 s for an unreachable SLURM controller).
# The uninstall takes it out of venvs built before it moved (a no-op otherwise).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[cpu]"
	$(BIN)/python -m pip uninstall -q -y snakemake-executor-plugin-slurm snakemake-executor-plugin-slurm-jobstep
	rm -rf $(SLURM_PLUGINS)
	$(BIN)/python -m pip install -q --no-deps --target $(SLURM_PLUGINS) $$($(BIN)/python -c \
	  'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["slurm"])')
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

# Both run the tests in a random order (pytest-randomly, on once installed); a failing order
# is replayed with `pytest --randomly-seed=<the seed its header printed>`, the file order is
# `-p no:randomly`.
test: $(STAMP)
	$(BIN)/pytest

# everything but the tests marked slow (each over ~10 s on 2 cores; pyproject.toml's markers)
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check workflow tests bench
	$(BIN)/lint-imports
	$(BIN)/snakemake --lint

bench: $(STAMP)
	$(BIN)/python bench/run_all.py $(if $(GRIDS),--grids $(GRIDS))

# Through temporary files, renamed only when both steps succeed: a failed snakemake or dot
# never leaves an empty docs/rulegraph.svg behind.
dag: $(STAMP)
	@command -v dot >/dev/null || { echo "make dag: 'dot' not found: install graphviz (.ci/setup-system.sh does)" >&2; exit 1; }
	$(BIN)/snakemake --rulegraph > docs/rulegraph.dot.tmp && dot -Tsvg docs/rulegraph.dot.tmp > docs/rulegraph.svg.tmp \
	  && mv docs/rulegraph.svg.tmp docs/rulegraph.svg; rc=$$?; rm -f docs/rulegraph.dot.tmp docs/rulegraph.svg.tmp; exit $$rc

clean-results:
	rm -rf results logs benchmarks .snakemake
