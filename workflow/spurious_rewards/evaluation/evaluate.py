"""Evaluate a base model or every checkpoint of a run on every configured benchmark.

Outputs, per (checkpoint, benchmark): a compact gzipped JSONL of samples
(problem id, sample index, response, extracted answer, correct, style label,
repetition flag, token length) under ``samples/``, each with its column index
(:mod:`..samplefile`: what the analysis reads), and one summary row in
``summary.json``. Grading uses the rewards module's ground-truth grader, in
parallel worker processes (never in the generation process's threads).
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

from .. import data, generation, io, provenance, samplefile, templates
from .. import scoring as grading
from ..scoring.style import detect_repetition, is_code
from ..stats import pass_at_k

log = logging.getLogger(__name__)


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


def run_benchmark(engine, model: dict, template: str, bench: dict, records: list[dict], ev: dict,
                  examples: list[dict] | tuple = ()) -> tuple[list[dict], dict]:
    """Generate, grade and classify one benchmark under ``template``: (sample rows, summary)."""
    tok = engine.tokenizer
    prompts = [templates.render_prompt(tok, template, r["prompt"], examples=examples) for r in records]
    if model.get("prompt_forcing"):
        prompts = [p + model["prompt_forcing"] for p in prompts]
    outs = engine.generate(
        prompts, n=bench["samples"], temperature=bench["temperature"], top_p=bench["top_p"],
        max_new_tokens=ev["max_new_tokens"], seed=ev["seed"], stop=templates.stop_strings(template),
    )
    r1 = templates.is_r1(template)
    preds = [[grading.extract_answer(o, r1=r1) for o in row] for row in outs]
    pairs = [(p, rec["answer"]) for rec, row in zip(records, preds, strict=True) for p in row]
    flat = grading.grade_many(pairs, workers=ev.get("grading_workers") or None)
    n = bench["samples"]
    correct = [flat[i * n : (i + 1) * n] for i in range(len(records))]
    code = [[is_code(o) for o in row] for row in outs]
    rep = [[detect_repetition(o) for o in row] for row in outs]
    lengths = [[len(x) for x in tok(row, add_special_tokens=False)["input_ids"]] for row in outs]
    sample_rows = [
        {"id": rec["id"], "i": j, "response": outs[i][j], "pred": preds[i][j],
         "correct": correct[i][j], "code": code[i][j], "repetition": rep[i][j],
         "tokens": lengths[i][j]}
        for i, rec in enumerate(records) for j in range(n)
    ]
    return sample_rows, summarize(correct, code, rep, lengths, bench["pass_at"])


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
    benches = {name: (b, data.load_records(b["data"])) for name, b in spec["benchmarks"].items()}
    rows = []
    with io.atomic_output(out_samples) as samples_tmp:
        Path(samples_tmp).mkdir(parents=True)
        provenance.write_sidecar(samples_tmp, spec, ev["seed"])
        for step, weights in _targets(model_dir, checkpoints_dir):
            engine = generation.make_engine(weights, ev["engine"], threads=ev.get("threads"),
                                            batch_size=ev["batch_size"], seed=ev["seed"])
            for name, (bench, records) in benches.items():
                t0 = time.time()
                sample_rows, summary = run_benchmark(engine, model, template, bench, records, ev)
                samplefile.write(sample_rows, Path(samples_tmp) / f"step{step}_{name}.jsonl.gz")
                rows.append({"step": step, "benchmark": name, **summary, "seconds": round(time.time() - t0, 2)})
                log.info("step %d %s: accuracy %.3f code %.3f", step, name, summary["accuracy"],
                         summary["code_frequency"])
            del engine
    result = {"model": model["name"], "grading": grading.grading_stats(), "results": rows,
              "provenance": provenance.provenance(provenance.spec_hash(spec), ev["seed"])}
    io.write_json(result, out_summary)
    return result


#: What the few-shot examples show (``few_shot_shows`` in the baselines summary).
FEW_SHOT_WORKED, FEW_SHOT_ANSWERS = "worked solutions", "answers only"


def few_shot_examples(path: str | Path, shots: int, seed: int) -> tuple[list[dict], str]:
    """``shots`` records drawn with ``seed`` from a training dataset (never from a benchmark), and what they show.

    Where the dataset has worked solutions (its records' ``solution`` field), the
    shots are drawn from the records that have one, so the prompt shows how a
    problem is solved, not only its answer: DeepScaleR has a solution on a minority
    of rows, and a draw from all rows would mostly miss them. With fewer solved
    records than ``shots``, the draw is from all records and the examples show
    answers only (a set without solutions draws exactly as before).
    """
    records = data.load_records(path)
    if len(records) < shots:
        raise ValueError(f"{path}: {len(records)} records, the few_shot template needs {shots}")
    solved = [r for r in records if (r.get("solution") or "").strip()]
    if len(solved) >= shots:
        return random.Random(seed).sample(solved, shots), FEW_SHOT_WORKED
    if solved:
        log.warning("%s: only %d records have a worked solution, the few_shot template needs %d: "
                    "its examples show answers only", path, len(solved), shots)
    return [{k: v for k, v in r.items() if k != "solution"}
            for r in random.Random(seed).sample(records, shots)], FEW_SHOT_ANSWERS


def evaluate_baselines(spec: dict, *, model_dir: str, out_summary: str | Path, out_samples: str | Path) -> dict:
    """The base model under every baseline template: ``samples/<template>/step0_<benchmark>.jsonl.gz``.

    The summary records the few-shot examples and what they show (``few_shot_shows``:
    worked solutions or answers only, see :func:`few_shot_examples`).

    One engine serves every template (the weights load once). A template the
    tokenizer cannot render is recorded as unavailable, not an error: base Llama
    has no chat template, and that is a finding, not a failure.
    """
    model, ev, bl = spec["model"], spec["evaluation"], spec["baselines"]
    benches = {name: (b, data.load_records(b["data"])) for name, b in spec["benchmarks"].items()}
    examples, shows = [], None
    if "few_shot" in bl["templates"]:
        examples, shows = few_shot_examples(bl["shots_data"], bl["shots"], bl["seed"])
        log.info("few_shot: %d examples from %s, showing %s", len(examples), bl["shots_data"], shows)
    engine = generation.make_engine(model_dir, ev["engine"], threads=ev.get("threads"),
                                    batch_size=ev["batch_size"], seed=ev["seed"])
    rows = []
    with io.atomic_output(out_samples) as tmp:
        Path(tmp).mkdir(parents=True)
        provenance.write_sidecar(tmp, spec, ev["seed"])
        for template in bl["templates"]:
            (Path(tmp) / template).mkdir(parents=True)
            for name, (bench, records) in benches.items():
                t0 = time.time()
                try:
                    sample_rows, summary = run_benchmark(engine, model, template, bench, records, ev,
                                                         examples if template == "few_shot" else ())
                except templates.TemplateUnavailable as exc:
                    rows.append({"template": template, "benchmark": name, "available": False, "reason": str(exc)})
                    log.info("%s %s: unavailable (%s)", template, name, exc)
                    continue
                samplefile.write(sample_rows, Path(tmp) / template / f"step0_{name}.jsonl.gz")
                rows.append({"template": template, "benchmark": name, "available": True, **summary,
                             "seconds": round(time.time() - t0, 2)})
                log.info("%s %s: accuracy %.3f code %.3f", template, name, summary["accuracy"],
                         summary["code_frequency"])
    result = {"model": model["name"], "paper_template": model["template"], "few_shot_examples": examples,
              "few_shot_shows": shows, "results": rows, "provenance": provenance.provenance(provenance.spec_hash(spec), ev["seed"])}
    io.write_json(result, out_summary)
    return result
