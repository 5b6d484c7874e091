#!/usr/bin/env bash
# Run by Snakemake after it creates envs/train-openrlhf.yaml: conda's pip step
# cannot build flash-attn (it needs the env's torch at build time), and
# openrlhf's own requirements would pull a different flash-attn build.
set -euo pipefail
pip install --no-build-isolation flash-attn==2.8.3
pip install --no-deps openrlhf==0.11.2
