#!/usr/bin/env bash
# Run by Snakemake after it creates this conda env: install the pipeline's own package
# (no dependencies: the env file pins them), so every job runs the installed `spurious`
# CLI. SPURIOUS_REPO is the repository root, set by workflow/rules/common.smk.
set -euo pipefail
repo="${SPURIOUS_REPO:?SPURIOUS_REPO is not set: run Snakemake on this repository's Snakefile}"
pip install --no-deps -e "$repo"
