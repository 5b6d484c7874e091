"""A stand-in for ``python -m openrlhf.cli.train_ppo_ray`` that honours its I/O contract on CPU.

Why: ``spurious_rewards.training.openrlhf_backend.train_openrlhf`` cannot run real OpenRLHF without GPUs,
but everything around it can be tested: the data file it writes, the per-run reward file
(loaded here with ``spec_from_file_location`` exactly as OpenRLHF does), the streamed
``✨ Global step N: {...}`` lines, ``{ckpt.path}/global_step{N}_hf`` folders and resuming
from ``{ckpt.path}/_actor/latest`` with ``--ckpt.load_enable``. It reads only the flags it
needs (``parse_known_args``); the real parser is checked separately. Each "sample" is the
canned response ``\\boxed{<training label>}`` for even sample indices, ``\\boxed{0}`` else.

``FAKE_OPENRLHF_FAIL_AFTER=k`` exits with status 1 right after step ``k`` (a killed job).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    for flag in ("--data.prompt_dataset", "--reward.remote_url", "--ckpt.path", "--actor.model_name_or_path"):
        p.add_argument(flag)
    for flag in ("--data.max_samples", "--rollout.batch_size", "--rollout.n_samples_per_prompt", "--ckpt.save_steps"):
        p.add_argument(flag, type=int)
    p.add_argument("--ckpt.load_enable", action="store_true")
    p.add_argument("--data.apply_chat_template", action="store_true")
    a, _ = p.parse_known_args(argv)
    a = vars(a)

    spec = importlib.util.spec_from_file_location("reward_func", a["reward.remote_url"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    rows = [json.loads(x) for x in Path(a["data.prompt_dataset"]).read_text().splitlines() if x.strip()]
    rows = rows[: a["data.max_samples"]]
    ckpt = Path(a["ckpt.path"])
    start = 0
    latest = ckpt / "_actor" / "latest"
    if a["ckpt.load_enable"] and latest.exists():
        start = int(latest.read_text().strip().removeprefix("global_step"))
        print(f"resuming from global step {start}", flush=True)
    fail_after = int(os.environ.get("FAKE_OPENRLHF_FAIL_AFTER", "0") or 0)
    batch, n = a["rollout.batch_size"], a["rollout.n_samples_per_prompt"]
    steps = len(rows) // batch
    for step in range(start + 1, steps + 1):
        rewards, extra = [], {}
        for row in rows[(step - 1) * batch : step * batch]:
            answer = json.loads(row["label"])["answer"]
            for i in range(n):
                response = f"\\boxed{{{answer if i % 2 == 0 else 0}}}<|im_end|>"
                out = module.reward_func([row["prompt"] + response], [row["prompt"]], [row["label"]])
                rewards.append(float(out["rewards"][0]))
                for k, v in out["extra_logs"].items():
                    extra.setdefault(k, []).append(float(v))
        status = {
            "policy_loss": 0.1,
            "reward": sum(rewards) / len(rewards),
            "ppo_clip_ratio": 0.25,
            "kl": float("nan"),
            "response_length": 12.0,
            "timing/step_total": 0.01,
            **{k: sum(v) / len(v) for k, v in extra.items()},
        }
        print(f"(PPOTrainer pid=1) [2026-01-01 00:00:00,000] [INFO] ✨ Global step {step}: {status}", flush=True)
        if step % a["ckpt.save_steps"] == 0:
            hf = ckpt / f"global_step{step}_hf"
            hf.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "model.safetensors", "generation_config.json"):
                src = Path(a["actor.model_name_or_path"]) / name
                if src.exists():
                    shutil.copy(src, hf / name)
            latest.parent.mkdir(parents=True, exist_ok=True)
            latest.write_text(f"global_step{step}")
        if fail_after and step == fail_after:
            print("simulated crash", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    # invoked as: fake_python -m openrlhf.cli.train_ppo_ray ARGS (the wrapper drops "-m module")
    sys.exit(main(sys.argv[1:]))
