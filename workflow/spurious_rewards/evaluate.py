"""Evaluate a base model or every checkpoint of a run on every configured benchmark.

Outputs, per (checkpoint, benchmark): a compact gzipped JSONL of samples
(problem id, sample index, response, extracted answer, correct, style label,
repetition flag, token length) under ``samples/``, and one summary row in
``summary.json``. Grading uses the rewards module's ground-truth grader, in
parallel worker processes (never in the generation process's threads).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from . import classify, data, generation, grading, io, provenance, rewards, templates

log = logging.getLogger(__name__)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): P(at least one of k draws from n samples, c correct, is correct).

    With n == k it is the empirical "any of k correct" the paper reports.
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(correct: list[list[bool]], code: list[list[bool]], repeated: list[list[bool]],
              lengths: list[list[int]], pass_at: list[int]) -> dict:
    """Benchmark metrics from per-problem sample lists (avg@k = mean accuracy over all samples)."""
    flat_c = [c for row in correct for c in row]
    flat_k = [k for row in code for k in row]
    n_samples = len(flat_c)
    out = {
        "problems": len(correct),
        "samples": n_samples,
        "accuracy": sum(flat_c) / n_samples if n_samples else float("nan"),
        "code_frequency": sum(flat_k) / n_samples if n_samples else float("nan"),
        "repetition_rate": sum(r for row in repeated for r in row) / n_samples if n_samples else float("nan"),
        "mean_length": sum(x for row in lengths for x in row) / n_samples if n_samples else float("nan"),
    }
    with_code = [c for c, k in zip(flat_c, flat_k, strict=True) if k]
    without = [c for c, k in zip(flat_c, flat_k, strict=True) if not k]
    out["accuracy_code"] = sum(with_code) / len(with_code) if with_code else None
    out["accuracy_language"] = sum(without) / len(without) if without else None
    for k in pass_at:
        vals = [pass_at_k(len(row), sum(row), k) for row in correct]
        out[f"pass@{k}"] = sum(vals) / len(vals) if vals else float("nan")
    return out


def _targets(model_dir: str | None, checkpoints_dir: str | Path | None) -> list[tuple[int, str]]:
    """(step, weights) pairs: the base model is step 0."""
    if model_dir:
        return [(0, str(model_dir))]
    index = io.read_json(Path(checkpoints_dir) / "index.json")
    return [(s, str(Path(checkpoints_dir) / f"step_{s}")) for s in index["steps"]]


def evaluate(
    spec: dict,
    *,
    model_dir: str | None = None,
    checkpoints_dir: str | Path | None = None,
    out_summary: str | Path,
    out_samples: str | Path,
) -> dict:
    model = spec["model"]
    ev = spec["evaluation"]
    template = model["template"]
    r1 = template == "r1"
    benches = {name: (b, data.load_records(b["data"])) for name, b in spec["benchmarks"].items()}
    rows = []
    with io.atomic_output(out_samples) as samples_tmp:
        Path(samples_tmp).mkdir(parents=True)
        for step, weights in _targets(model_dir, checkpoints_dir):
            engine = generation.make_engine(weights, ev["engine"], threads=ev.get("threads"),
                                            batch_size=ev["batch_size"], seed=ev["seed"])
            tok = engine.tokenizer
            for name, (bench, records) in benches.items():
                t0 = time.time()
                prompts = [templates.render_prompt(tok, template, r["prompt"]) for r in records]
                if model.get("prompt_forcing"):
                    prompts = [p + model["prompt_forcing"] for p in prompts]
                outs = engine.generate(
                    prompts, n=bench["samples"], temperature=bench["temperature"], top_p=bench["top_p"],
                    max_new_tokens=ev["max_new_tokens"], seed=ev["seed"], stop=templates.stop_strings(template),
                )
                preds = [[grading.extract_answer(o, r1=r1) for o in row] for row in outs]
                pairs = [(p, rec["answer"]) for rec, row in zip(records, preds, strict=True) for p in row]
                flat = grading.grade_many(pairs, workers=ev.get("grading_workers") or None)
                n = bench["samples"]
                correct = [flat[i * n : (i + 1) * n] for i in range(len(records))]
                code = [[classify.is_code(o) for o in row] for row in outs]
                rep = [[rewards.detect_repetition(o) for o in row] for row in outs]
                lengths = [[len(x) for x in tok(row, add_special_tokens=False)["input_ids"]] for row in outs]
                sample_rows = [
                    {"id": rec["id"], "i": j, "response": outs[i][j], "pred": preds[i][j],
                     "correct": correct[i][j], "code": code[i][j], "repetition": rep[i][j],
                     "tokens": lengths[i][j]}
                    for i, rec in enumerate(records) for j in range(n)
                ]
                io.write_jsonl(sample_rows, Path(samples_tmp) / f"step{step}_{name}.jsonl.gz")
                summary = summarize(correct, code, rep, lengths, bench["pass_at"])
                rows.append({"step": step, "benchmark": name, **summary, "seconds": round(time.time() - t0, 2)})
                log.info("step %d %s: accuracy %.3f code %.3f", step, name, summary["accuracy"],
                         summary["code_frequency"])
            del engine
    result = {"model": model["name"], "grading": grading.grading_stats(), "results": rows,
              "provenance": provenance.provenance(provenance.spec_hash(spec), ev["seed"])}
    io.write_json(result, out_summary)
    return result
