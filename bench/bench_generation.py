"""Generation time of our CPU engine (HFEngine: `sample_ids`) against `model.generate` on a toy organism.

Why: every evaluation, labelling, baseline and contamination job of `make run` is
mostly generation, and `generate` keeps finished rows in the batch until its longest
answer ends. `generation.sample_ids` drops them; this measures what that buys, per
template (the chat prompts of the benchmarks and the long few-shot prompts of the
baselines, whose answers vary most in length) and per batch size, against the
baseline `model.generate` called exactly as HFEngine called it before (T=1, top_k
off, EOS honoured, so both sides produce answers of their natural lengths).

The figure is milliseconds of wall time per generated sequence (one thread, the
median of `--repeats` passes over the same prompts), and the ratio of the engine at
each batch size to `generate` at batch 64 (the old default) measured in the same run.
Both sides sample from the same seeds, so they draw from the same distribution;
answer lengths are printed to show it. Writes results/bench/generation.json.

Run: ``python bench/bench_generation.py`` (~2 min).
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

BATCHES = (64, 128, 256)
BASELINE_BATCH = 64


def run(engine: generation.HFEngine, prompts: list[str], batch: int, *, raw: bool, max_new_tokens: int,
        seed: int) -> tuple[float, float]:
    """Seconds for all ``prompts`` in batches of ``batch``, and the mean answer length in tokens."""
    tok, model = engine.tokenizer, engine.model
    eos = model.generation_config.eos_token_id or tok.eos_token_id
    lengths: list[int] = []
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(prompts), batch)):
        enc = tok(prompts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + b)
            if raw:
                ids = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                     max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                                     eos_token_id=eos)[:, enc["input_ids"].shape[1] :]
            else:
                ids = generation.sample_ids(model, enc["input_ids"], enc["attention_mask"],
                                            max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0,
                                            eos_token_id=eos, pad_token_id=tok.pad_token_id)
        lengths += (ids != tok.pad_token_id).sum(1).tolist()
    return time.perf_counter() - t0, statistics.mean(lengths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "workflow/resources/organisms/toy-qwen-math"))
    ap.add_argument("--problems", type=int, default=128, help="problems per template (x4 samples each)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results/bench/generation.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    engine = generation.HFEngine(args.model, threads=args.threads, progress=False)
    problems = synthetic.generate(args.problems, seed=5, split="test")
    shots = [{"prompt": p.prompt, "answer": p.answer, "solution": p.solution}
             for p in synthetic.generate(4, seed=6, split="train")]
    rows = []
    for template in ("chat", "few_shot"):
        prompts = [templates.render_prompt(engine.tokenizer, template, p.prompt, examples=shots)
                   for p in problems for _ in range(4)]
        times: dict[tuple[str, int], float] = {}
        for kind, batches in (("generate", (BASELINE_BATCH, *[b for b in BATCHES if b != BASELINE_BATCH])),
                              ("engine", BATCHES)):
            for batch in batches:
                passes = [run(engine, prompts, batch, raw=kind == "generate", max_new_tokens=args.max_new_tokens,
                              seed=r) for r in range(args.repeats)]
                sec = statistics.median(t for t, _ in passes)
                length = statistics.mean(n for _, n in passes)
                times[kind, batch] = sec
                ms = 1000 * sec / len(prompts)
                ratio = sec / times["generate", BASELINE_BATCH]
                rows.append({"template": template, "kind": kind, "batch": batch, "ms_per_seq": round(ms, 3),
                             "mean_answer_tokens": round(length, 2), "ratio_to_generate_64": round(ratio, 3)})
                print(f"{template:8s} {kind:8s} batch {batch:3d}: {ms:6.2f} ms/seq, answers {length:5.1f} tokens, "
                      f"{ratio:.2f}x generate@{BASELINE_BATCH}")
    out = {"machine": f"{platform.machine()} threads={args.threads}", "model": args.model,
           "max_new_tokens": args.max_new_tokens, "sequences_per_template": 4 * args.problems, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
