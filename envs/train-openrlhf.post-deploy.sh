#!/usr/bin/env bash
# Run by Snakemake after it creates envs/train-openrlhf.yaml: conda's pip step
# cannot build flash-attn (it needs the env's torch at build time), and
# openrlhf's own requirements would pull a different flash-attn build.
set -euo pipefail
pip install --no-build-isolation flash-attn==2.8.3
pip install --no-deps openrlhf==0.11.2
# the pipeline's own package (its reward file imports spurious_rewards inside Ray workers);
# SPURIOUS_REPO is the repository root, set by workflow/rules/common.smk
pip install --no-deps -e "${SPURIOUS_REPO:?SPURIOUS_REPO is not set: run Snakemake on this repository's Snakefile}"
