#!/usr/bin/env bash
# The wheels bench/gpu_check.py needs on a lent GPU machine that reaches no package index.
#
# That machine (see BENCHMARKS.md, "GPU check on a lent machine") has Python 3.12 with CUDA
# torch 2.11, transformers 5.17, accelerate 1.15, tokenizers, safetensors, huggingface-hub,
# numpy, pandas, pyarrow, psutil, jinja2, pyyaml, sympy, attrs, fsspec, xxhash and tqdm, but
# not TRL, datasets (which TRL imports at top level) and its dill/multiprocess, math-verify
# and its parser, nor jsonschema (config validation). This script, run where PyPI is
# reachable, downloads exactly those, for CPython 3.12 on x86-64 Linux, with --no-deps (every
# dependency is listed below on purpose: the image's own copies of the rest are used), into
# bench/wheels/ (git-ignored), then prints the total and fails above GPU_WHEELS_MAX_MIB
# (default 40: the carried tree is capped at 64 MiB and the organisms take ~4 MB of it).
#
# The project itself travels as source: bench/gpu_check.py puts workflow/ on sys.path.
# rouge-score (contamination audit only, imported lazily) is not needed by the check.
# antlr4-python3-runtime 4.9.3 exists only as an sdist on PyPI: it is built into a pure wheel
# here (pip wheel), the only one not downloaded as a binary.
#
# Usage: bash bench/gpu_wheels.sh [--list]   (--list prints the requirement lines and exits)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${GPU_WHEELS_DIR:-bench/wheels}"
MAX_MIB="${GPU_WHEELS_MAX_MIB:-40}"
PY="${PYTHON:-python3}"

# name==version, one per line: the versions the project pins (pyproject.toml) or, for
# transitive dependencies, the ones the project's venv resolved them to. Each is absent
# from the lent machine's image (/work/.library/device/KINDS.md, "Python packages already there").
BINARY_WHEELS=(
  "trl==1.16.0"                       # pyproject [train]; needs transformers>=4.56.2, accelerate>=1.10.1
  "datasets==5.2.0"                   # imported by trl.trainer.grpo_trainer at module level
  "dill==0.4.1"                       # datasets: dill<0.4.2
  "multiprocess==0.70.19"             # datasets: multiprocess<0.70.20 (per-Python wheels: py312 tag)
  "math-verify==0.9.0"                # scoring.equivalence
  "latex2sympy2_extended==1.11.0"     # math-verify==0.9.0 pins it
  "jsonschema==4.26.0"                # config validation
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"                 # compiled (Rust): the cp312 manylinux wheel
)
SDIST_WHEELS=(
  "antlr4-python3-runtime==4.9.3"     # math-verify[antlr4_9_3]; sdist only on PyPI -> pip wheel
)

if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${BINARY_WHEELS[@]%%#*}" "${SDIST_WHEELS[@]%%#*}" | sed 's/ *$//'
  exit 0
fi

mkdir -p "$DEST"
rm -f "$DEST"/*.whl
reqs=()
for r in "${BINARY_WHEELS[@]}"; do reqs+=("${r%%#*}"); done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d "$DEST" "${reqs[@]}"
for r in "${SDIST_WHEELS[@]}"; do
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "${r%%#*}" 2>/dev/null \
    || "$PY" -m pip wheel -q --no-deps -w "$DEST" "${r%%#*}"
done

# exactly one wheel per requirement, each pure or built for CPython 3.12 x86-64
n_req=$(( ${#BINARY_WHEELS[@]} + ${#SDIST_WHEELS[@]} ))
n_whl=$(find "$DEST" -maxdepth 1 -name '*.whl' | wc -l)
[ "$n_whl" -eq "$n_req" ] || { echo "gpu_wheels: $n_whl wheels for $n_req requirements in $DEST" >&2; exit 1; }
for w in "$DEST"/*.whl; do
  case "$(basename "$w")" in
    *-py3-none-any.whl|*-py2.py3-none-any.whl|*-py312-none-any.whl|*-cp312-cp312-manylinux*_x86_64.whl) ;;
    *) echo "gpu_wheels: $(basename "$w") does not install on CPython 3.12 x86-64" >&2; exit 1 ;;
  esac
done
ls -l "$DEST"/*.whl | awk '{printf "%10d  %s\n", $5, $NF}'
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
awk -v t="$total" -v m="$MAX_MIB" 'BEGIN { printf "gpu_wheels: total %.1f MiB (limit %d MiB)\n", t / 1048576, m;
                                          exit (t > m * 1048576) ? 1 : 0 }' \
  || { echo "gpu_wheels: over the limit: the carried tree is capped at 64 MiB" >&2; exit 1; }
