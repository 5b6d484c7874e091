#!/usr/bin/env bash
# One-GPU smoke check of the paper's GPU path, end to end through our own CLI:
#   1. an OpenRLHF 0.11.2 + vLLM 0.29.0 venv, pip only (.ci/openrlhf-env.sh, flavor gpu;
#      cached: reruns skip it);
#   2. GRPO_STEPS (default 2) rollout steps of the real OpenRLHF backend on the toy
#      organism: `spurious train` with backend openrlhf (Ray + DeepSpeed ZeRO-3 + vLLM,
#      colocated on the one GPU), checkpoints published exactly as the TRL backend's;
#   3. evaluation of every checkpoint with vLLM: `spurious evaluate`, engine vllm
#      (our generation.VLLMEngine);
#   4. a report: rollout tokens/s and step time (OpenRLHF's timings), eval tokens/s.
# The run itself takes a few minutes (Ray, DeepSpeed and vLLM start-up dominate).
#
# Needs: one NVIDIA GPU with nvidia-smi; Python 3.10-3.12 with venv; PyPI on the first run;
# a CUDA toolkit (nvcc) because DeepSpeed JIT-builds its fused Adam, and flash-attn 2.8.3
# compiles for this GPU's architecture if no prebuilt wheel matches torch 2.13 (first run).
# Usage: bash bench/gpu_check.sh
# Env:   GPU_CHECK_MODEL (default workflow/resources/organisms/toy-qwen-math),
#        GPU_CHECK_OUT (default results/bench/gpu_check), GPU_CHECK_STEPS (default 2),
#        SPURIOUS_OPENRLHF_VENV (reuse an existing OpenRLHF gpu venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
MODEL="${GPU_CHECK_MODEL:-$ROOT/workflow/resources/organisms/toy-qwen-math}"
OUT="${GPU_CHECK_OUT:-$ROOT/results/bench/gpu_check}"
STEPS="${GPU_CHECK_STEPS:-2}"

die() { echo "gpu_check: $*" >&2; exit 1; }
command -v nvidia-smi >/dev/null || die "no nvidia-smi: this check needs an NVIDIA GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || die "nvidia-smi failed"
[ -f "$MODEL/config.json" ] || die "no model at $MODEL (build the organism, or set GPU_CHECK_MODEL)"

t0=$(date +%s)
VENV="$(SPURIOUS_OPENRLHF_FLAVOR=gpu bash "$ROOT/.ci/openrlhf-env.sh")"
PY="$VENV/bin/python"
install_s=$(( $(date +%s) - t0 ))
echo "gpu_check: environment ready in ${install_s} s: $VENV"

rm -rf "$OUT"
mkdir -p "$OUT"
# the pipeline package, installed (no PYTHONPATH edits): the reward file imports it inside Ray workers
"$PY" -m pip install -q --no-deps -e "$ROOT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
unset RAY_ADDRESS SPURIOUS_OPENRLHF_PYTHON  # a private Ray for this job; OpenRLHF runs in this venv

# Specs and data, built from config.yaml exactly as the Snakefile would, scaled to one GPU.
"$PY" - "$MODEL" "$OUT" "$STEPS" <<'EOF'
import json
import sys
from pathlib import Path

from spurious_rewards import config as cfgmod
from spurious_rewards import data

model, out, steps = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
cfg = cfgmod.load("config.yaml")
cfg["backend"] = "openrlhf"
cfg["models"] = {"toy": {"path": str(model), "template": "chat", "family": "toy"}}
cfg["rewards"] = {"ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]}}
# 16 prompts x 8 samples per step, 4 updates of 32: the default study's shape, on 1 GPU
cfg["grpo"].update(steps=steps, save_every=1, gpus=1, micro_batch=8)
cfg["evaluation"].update(engine="vllm", threads=4, grading_workers=4)
cfg["benchmarks"] = {"arith": {"dataset": "arith_test", "samples": 4, "temperature": 1.0, "pass_at": [1, 4]}}
cfg["audit"]["clean"] = ["arith"]
cfg = cfgmod.validate(cfg)
for name in ("train", "arith_test"):
    data.prepare_to_file({"name": name, **cfg["datasets"][name]}, out / "data" / f"{name}.jsonl")
spec = cfgmod.run_spec(cfg, cfgmod.Run("toy", "ground_truth", "clip", 1))
(out / "train_spec.json").write_text(json.dumps(spec))
eval_spec = {
    "model": {"name": "toy", **cfg["models"]["toy"]},
    "benchmarks": {n: {**b, "data": str(out / "data" / f"{b['dataset']}.jsonl")} for n, b in cfg["benchmarks"].items()},
    "evaluation": cfg["evaluation"],
}
(out / "eval_spec.json").write_text(json.dumps(eval_spec))
# the clipping-bias probe (audit), as the probe_clip_bias rule resolves it, on the GPU
probe_spec = {
    "model": {"name": "toy", **cfg["models"]["toy"]},
    "train_data": str(out / "data" / "train.jsonl"),
    "benchmark": {"name": "arith", **cfg["benchmarks"]["arith"], "data": str(out / "data" / "arith_test.jsonl")},
    "grpo": cfg["grpo"],
    "probe": {**cfg["audit"]["clip_probe"], "draws": 4, "prompts_per_rollout": cfg["grpo"]["prompts_per_rollout"],
              "lr": cfg["grpo"]["lr"]},
    "variants": cfg["variants"],
    "max_new_tokens": cfg["evaluation"]["max_new_tokens"],
    "alpha": 0.05,
}
(out / "probe_spec.json").write_text(json.dumps(probe_spec))
EOF

t_train=$(date +%s)
"$PY" -m spurious_rewards.cli train --spec "$(cat "$OUT/train_spec.json")" --data "$OUT/data/train.jsonl" \
    --state "$OUT/state" --out-checkpoints "$OUT/checkpoints" --out-metrics "$OUT/metrics.jsonl" \
    --threads 4 2>&1 | tee "$OUT/train.log"
train_s=$(( $(date +%s) - t_train ))

t_eval=$(date +%s)
"$PY" -m spurious_rewards.cli evaluate --spec "$(cat "$OUT/eval_spec.json")" --checkpoints "$OUT/checkpoints" \
    --out-summary "$OUT/eval/summary.json" --out-samples "$OUT/eval/samples" --threads 4 2>&1 | tee "$OUT/eval.log"
eval_s=$(( $(date +%s) - t_eval ))

# 4 draws of the clipping-bias probe (audit.clip_probe) on the GPU
t_probe=$(date +%s)
"$PY" -m spurious_rewards.cli probe-clip --spec "$(cat "$OUT/probe_spec.json")" --model-dir "$MODEL" \
    --out "$OUT/clip_probe.json" --threads 4 2>&1 | tee "$OUT/probe.log"
probe_s=$(( $(date +%s) - t_probe ))
echo "clip probe: ${probe_s} s"

"$PY" - "$OUT" "$install_s" "$train_s" "$eval_s" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
install_s, train_s, eval_s = (int(x) for x in sys.argv[2:5])
spec = json.loads((out / "train_spec.json").read_text())
g = spec["grpo"]
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
steps = []
for r in rows:
    samples = r.get("rollout/num_samples") or g["prompts_per_rollout"] * g["group_size"]
    gen = r.get("timing/generation")
    tokens = samples * (r.get("response_length") or 0)
    steps.append({
        "step": r["step"],
        "step_s": r.get("step_time"),
        "generation_s": gen,
        "rollout_tokens_per_s": tokens / gen if gen else None,
        "reward": r.get("reward_mean"),
        "accuracy": r.get("accuracy"),
        "clip_fraction": r.get("clip_fraction"),
    })
summary = json.loads((out / "eval" / "summary.json").read_text())
evals = [{
    "step": e["step"], "benchmark": e["benchmark"], "accuracy": e["accuracy"], "seconds": e["seconds"],
    "tokens_per_s": e["samples"] * e["mean_length"] / e["seconds"] if e["seconds"] else None,
} for e in summary["results"]]
report = {"install_s": install_s, "train_wall_s": train_s, "eval_wall_s": eval_s, "steps": steps, "eval": evals}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2))
assert [s["step"] for s in steps] == list(range(1, g["steps"] + 1)), "missing training steps"
assert all(s["reward"] is not None for s in steps), "no reward logged"
EOF
echo "gpu_check: OK (report in $OUT/gpu_check.json)"
