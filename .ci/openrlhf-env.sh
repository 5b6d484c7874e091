#!/usr/bin/env bash
# Create (or reuse) an isolated OpenRLHF 0.11.2 virtual environment; print its path.
#
#   SPURIOUS_OPENRLHF_FLAVOR=cpu (default): what tests/test_openrlhf.py needs on a CPU
#     machine (CI): OpenRLHF's own argument parser, to parse-check every generated
#     command, and its reward executor, to load our reward file. vllm and flash_attn
#     are stubbed by the tests (tests/openrlhf_stubs), never installed.
#   SPURIOUS_OPENRLHF_FLAVOR=gpu: a real training + vLLM environment for one CUDA
#     machine with PyPI access (bench/gpu_check.sh): adds vllm 0.29.0 (OpenRLHF's
#     [vllm] extra pin), flash-attn 2.8.3 built against the installed torch, and the
#     pipeline's own dependencies.
#
# Why a venv of its own: OpenRLHF pins transformers==5.15.0 (ours: 5.24.0), ray,
# deepspeed and flash-attn; it must never touch the project's .venv.
# Why this recipe (docs/openrlhf.md §7-8): flash-attn is an sdist that
# needs torch inside its build and CUDA to compile, so a plain `pip install openrlhf`
# fails. We install the wheel's own requirements *minus flash-attn* (read from the
# wheel's METADATA, so they cannot drift from the pinned wheel), build deepspeed with no
# ops and without build isolation against the installed torch, then openrlhf itself
# with --no-deps.
#
# Env:   SPURIOUS_OPENRLHF_VENV    where (default ~/.cache/spurious-rewards/openrlhf-venv,
#                                  or .../openrlhf-gpu-venv for the gpu flavor)
#        SPURIOUS_OPENRLHF_PYTHON  the base interpreter (default python3; 3.10-3.12)
# A venv is reused only when its stamp matches this recipe; a half-built one (killed
# mid-install) has no stamp and is rebuilt. A lock serialises concurrent builders.
set -euo pipefail

OPENRLHF_VERSION=0.11.2
TORCH_VERSION=2.13.0      # vllm 0.29.0 pins it; on CPU machines pip takes the CPU wheel on disk
VLLM_VERSION=0.29.0       # openrlhf[vllm]==0.11.2 pins it
FLASH_ATTN_VERSION=2.8.3  # openrlhf==0.11.2 pins it
MATH_VERIFY='math-verify[antlr4_9_3]==0.9.0'   # our grader, as pinned in pyproject.toml
NUMPY='numpy==2.4.6'                           # as pinned in pyproject.toml (repetition detector)
# math-verify 0.9.0 has no antlr4_9_3 extra (pip warns and ignores it); our .venv gets 4.9.3
# through dvc/hydra. Pin it so latex parsing, hence grading, is the same in both venvs.
ANTLR='antlr4-python3-runtime==4.9.3'
# the pipeline's other runtime pins (pyproject.toml), for the gpu flavor's `spurious` CLI;
# transformers/tokenizers are left to OpenRLHF's transformers==5.15.0
# (pyarrow, which the sample files' column indexes need, comes with datasets: not pinned twice)
PIPELINE=('datasets==5.2.0' 'safetensors==0.8.0' 'pyyaml==6.0.4' 'jsonschema==4.26.0' 'pandas==3.1.1'
          'matplotlib==3.11.2' 'tqdm==4.70.1')

FLAVOR="${SPURIOUS_OPENRLHF_FLAVOR:-cpu}"
case "$FLAVOR" in
    cpu) default_name=openrlhf-venv ;;
    gpu) default_name=openrlhf-gpu-venv ;;
    *) echo "SPURIOUS_OPENRLHF_FLAVOR must be cpu or gpu, got '$FLAVOR'" >&2; exit 2 ;;
esac
RECIPE="flavor=$FLAVOR openrlhf=$OPENRLHF_VERSION torch=$TORCH_VERSION $MATH_VERIFY $NUMPY $ANTLR recipe=4"
[ "$FLAVOR" = gpu ] && RECIPE="$RECIPE vllm=$VLLM_VERSION flash-attn=$FLASH_ATTN_VERSION ${PIPELINE[*]}"

VENV="${SPURIOUS_OPENRLHF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spurious-rewards/$default_name}"
PYTHON="${SPURIOUS_OPENRLHF_PYTHON:-python3}"
STAMP="$VENV/.spurious-openrlhf-complete"

say() { echo "[openrlhf-env] $*" >&2; }

complete() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('openrlhf') != '$OPENRLHF_VERSION')" 2>/dev/null
}

if complete; then
    echo "$VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if complete; then  # another process built it while we waited
    echo "$VENV"
    exit 0
fi

start=$(date +%s)
say "building $VENV ($RECIPE)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_NO_INPUT=1

# torch first, pinned: anything else lets pip resolve another (multi-GB) build
"${PIP[@]}" install -q "torch==$TORCH_VERSION" >&2
# build tools that deepspeed's and flash-attn's setup.py import (built without isolation)
"${PIP[@]}" install -q setuptools wheel packaging psutil ninja einops "$NUMPY" >&2

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PIP[@]}" download -q --no-deps "openrlhf==$OPENRLHF_VERSION" -d "$tmp" >&2
wheel="$(ls "$tmp"/openrlhf-*.whl)"
"$VENV/bin/python" - "$wheel" "$tmp/requirements.txt" <<'EOF'
"""Write the wheel's unconditional requirements, minus flash-attn (CUDA-only build)."""
import re
import sys
import zipfile
from email.parser import Parser

wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(zf.read(meta).decode())
reqs = [r for r in msg.get_all("Requires-Dist") or [] if ";" not in r]  # extras (vllm, ring, liger) out
keep = [r for r in reqs if re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0].lower().replace("_", "-") != "flash-attn"]
if len(keep) != len(reqs) - 1:
    sys.exit(f"expected exactly one flash-attn requirement in {wheel}: {reqs}")
open(out, "w").write("\n".join(keep) + "\n")
EOF
say "requirements: $(tr '\n' ' ' < "$tmp/requirements.txt")"
extra=()
[ "$FLAVOR" = gpu ] && extra=("vllm==$VLLM_VERSION" "${PIPELINE[@]}")
# DS_BUILD_OPS=0: no CUDA/C++ ops at install (DeepSpeed JIT-builds what it needs)
DS_BUILD_OPS=0 DS_BUILD_AIO=0 DS_BUILD_GDS=0 \
    "${PIP[@]}" install -q --no-build-isolation -r "$tmp/requirements.txt" \
    "torch==$TORCH_VERSION" "$MATH_VERIFY" "$NUMPY" "$ANTLR" "${extra[@]}" >&2
if [ "$FLAVOR" = gpu ]; then
    # flash-attn's setup.py first looks for a prebuilt wheel matching torch/CUDA/python;
    # failing that it compiles, for this GPU's architecture only (minutes, not hours)
    arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ')"
    MAX_JOBS="${MAX_JOBS:-$(nproc)}" FLASH_ATTN_CUDA_ARCHS="${FLASH_ATTN_CUDA_ARCHS:-${arch:-90}}" \
        "${PIP[@]}" install -q --no-build-isolation "flash-attn==$FLASH_ATTN_VERSION" >&2
fi
"${PIP[@]}" install -q --no-deps "$wheel" >&2

echo "$RECIPE" > "$STAMP"
say "built in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
echo "$VENV"
