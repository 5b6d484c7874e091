"""Toy GRPO step time (TRL backend) against the raw cost of the same work in plain torch, and peak memory.

One rollout step of the default config = generate 16 prompts x 8 samples (48 new
tokens, T=1) + old log-probs of the 128 responses + 4 optimizer updates of 32
responses (forward/backward of a clipped-ratio loss, AdamW). The raw loop does
exactly that with `model.generate` and hand-written torch, so the ratio is the
pipeline's overhead (TRL bookkeeping, rewards, our per-step metrics).

Target: TRL step time within 1.5x of raw. Run: `python bench/bench_train.py`.
Writes results/bench/train.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from spurious_rewards import config as cfgmod  # noqa: E402
from spurious_rewards import data, templates  # noqa: E402
from spurious_rewards import training as train  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trl_step_time(cfg: dict, model: str, steps: int, workdir: Path) -> tuple[float, list[float]]:
    spec = cfgmod.run_spec(cfg, cfgmod.Run(model, "ground_truth", "clip", 1))
    data_path = workdir / "train.jsonl"
    data.prepare_to_file({"name": "train", **cfg["datasets"][cfg["training_data"]]}, data_path)
    train.train(spec, data_path=data_path, state_dir=workdir / "state", out_checkpoints=workdir / "ck",
                out_metrics=workdir / "metrics.jsonl")
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    walls = [r["wall_time"] for r in rows if r["step"] >= 1]
    per_step = [b - a for a, b in zip(walls, walls[1:], strict=False)]  # skips the first (warm-up) step
    return statistics.median(per_step), per_step


def raw_step_time(cfg: dict, model_dir: str, steps: int) -> tuple[float, list[float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    g = cfg["grpo"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=g["lr"], betas=(g["beta1"], g["beta2"]), weight_decay=0.0)
    recs = data.prepare({"name": "train", **cfg["datasets"][cfg["training_data"]]})
    prompts = [templates.render_prompt(tok, "chat", r["prompt"]) for r in recs]
    rollout = g["prompts_per_rollout"] * g["group_size"]
    mini = g["mini_batch"]
    times = []
    torch.manual_seed(0)
    for s in range(steps):
        t0 = time.perf_counter()
        batch = prompts[s * g["prompts_per_rollout"] : (s + 1) * g["prompts_per_rollout"]]
        enc = tok([p for p in batch for _ in range(g["group_size"])], return_tensors="pt", padding=True)
        model.eval()
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=g["max_new_tokens"],
                                 pad_token_id=tok.pad_token_id)
        model.train()
        plen = enc["input_ids"].shape[1]
        comp = out[:, plen:]
        mask = (comp != tok.pad_token_id).float()
        attn = torch.cat([enc["attention_mask"], mask.long()], dim=1)
        adv = torch.randn(rollout)

        def logps(ids, am, plen=plen):
            logits = model(input_ids=ids, attention_mask=am).logits[:, plen - 1 : -1]
            return torch.log_softmax(logits.float(), -1).gather(-1, ids[:, plen:].unsqueeze(-1)).squeeze(-1)

        with torch.no_grad():
            old = logps(out, attn)
        for u in range(rollout // mini):
            sl = slice(u * mini, (u + 1) * mini)
            lp = logps(out[sl], attn[sl])
            ratio = torch.exp(lp - old[sl])
            a = adv[sl].unsqueeze(1)
            loss = -torch.min(ratio * a, ratio.clamp(1 - g["epsilon"], 1 + g["epsilon"]) * a)
            loss = ((loss * mask[sl]).sum(-1) / mask[sl].sum(-1).clamp(min=1)).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), g["max_grad_norm"])
            opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--model", default="toy-qwen-math")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results/bench/train.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = cfgmod.load(args.config)
    cfg["grpo"]["steps"] = args.steps
    cfg["grpo"]["save_every"] = args.steps
    model_dir = cfg["models"][args.model]["path"]
    raw, raw_all = raw_step_time(cfg, model_dir, args.steps)
    rss_raw = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        trl, trl_all = trl_step_time(cfg, args.model, args.steps, Path(tmp))
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={torch.get_num_threads()} threads",
        "model": args.model,
        "rollout": {k: cfg["grpo"][k] for k in ("prompts_per_rollout", "group_size", "mini_batch", "max_new_tokens")},
        "raw_step_s": round(raw, 3),
        "trl_step_s": round(trl, 3),
        "ratio": round(trl / raw, 3),
        "target_ratio_max": 1.5,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_raw_mb": round(rss_raw, 1),
        "raw_steps_s": [round(x, 3) for x in raw_all],
        "trl_steps_s": [round(x, 3) for x in trl_all],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"toy GRPO step: TRL {trl:.3f} s vs raw torch {raw:.3f} s -> {trl / raw:.2f}x (target <= 1.5x); "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
