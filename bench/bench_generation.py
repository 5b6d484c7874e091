"""Generation throughput of our engine (HFEngine) against raw `model.generate` on a toy organism.

Same prompts, same sampling settings (T=1, top_k off, fixed number of new
tokens so both sides produce identical token counts), batch sizes 1, 8 and 32.
Target: engine >= 0.9x raw tokens/s. Writes results/bench/generation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from spurious_rewards import generation, templates  # noqa: E402
from spurious_rewards.data import synthetic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "workflow/resources/organisms/toy-qwen-math"))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results/bench/generation.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = generation.HFEngine(args.model, threads=args.threads, progress=False)
    tok, model = engine.tokenizer, engine.model
    problems = synthetic.generate(64, seed=5, split="test")
    prompts = [templates.render_prompt(tok, "chat", p.prompt) for p in problems]
    rows = []
    for bs in (1, 8, 32):
        batch = prompts[:bs]
        engine.batch_size = bs
        raw_t, eng_t = [], []
        for r in range(args.repeats):
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)
            raw_t.append(time.perf_counter() - t0)
            # min_new_tokens makes both sides generate exactly the same number of tokens
            model.generation_config.min_new_tokens = args.new_tokens
            t0 = time.perf_counter()
            engine.generate(batch, n=1, temperature=1.0, max_new_tokens=args.new_tokens, seed=r)
            eng_t.append(time.perf_counter() - t0)
            model.generation_config.min_new_tokens = None
        tokens = bs * args.new_tokens
        raw, eng = tokens / statistics.median(raw_t), tokens / statistics.median(eng_t)
        rows.append({"batch": bs, "raw_tok_s": round(raw, 1), "engine_tok_s": round(eng, 1),
                     "ratio": round(eng / raw, 3)})
        print(f"batch {bs:>2}: engine {eng:8.1f} tok/s vs raw generate {raw:8.1f} tok/s -> {eng / raw:.2f}x "
              "(target >= 0.9x)")
    out = {"machine": f"{platform.machine()} threads={args.threads}", "model": args.model,
           "new_tokens": args.new_tokens, "target_ratio_min": 0.9, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
