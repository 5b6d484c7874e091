"""Majority-vote and incorrect labels (docs/paper-setup.md §3.2; quirks 9, 17 and 18).

The base model samples N responses per training problem; the most common
non-empty extracted answer is the problem's label (ties go to the first seen,
as the authors' ``Counter.most_common`` did). The ``incorrect`` set keeps only
the problems whose majority answer is wrong, labelled with that wrong answer,
so the labels are still probable outputs of the model. Answers are compared as
strings when voting, as in the authors' script. Deviation, documented: the
authors held the first 100 records out as a test split; we keep every record
(our benchmarks are separate datasets).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from .. import data, generation, io, provenance, templates
from .. import scoring as grading
from ..scoring.style import is_code

log = logging.getLogger(__name__)


def majority(preds: list[str | None]) -> str:
    """The most common non-empty answer; ties go to the first seen; "" when every answer is empty."""
    votes = Counter(p for p in preds if p)
    return votes.most_common(1)[0][0] if votes else ""


def label_majority(
    spec: dict,
    *,
    data_path: str | Path,
    out_majority: str | Path,
    out_incorrect: str | Path,
    out_samples: str | Path,
) -> dict:
    """Sample, vote, grade; write the two label sets and the per-problem samples."""
    if spec.get("template") not in ("model", "plain"):
        raise ValueError(f"labelling.template: {spec.get('template')!r} is not allowed; allowed values: model, plain")
    records = data.load_records(data_path)
    model = spec["model"]
    template = model["template"] if spec["template"] == "model" else "plain"
    r1 = templates.is_r1(template)
    engine = generation.make_engine(
        model["path"], spec.get("engine", "auto"), threads=spec.get("threads"),
        batch_size=spec.get("batch_size", 32), seed=spec["seed"],
    )
    tokenizer = getattr(engine, "tokenizer", None)
    prompts = [templates.render_prompt(tokenizer, template, r["prompt"]) for r in records]
    outputs = engine.generate(
        prompts,
        n=spec["samples"],
        temperature=spec["temperature"],
        top_p=1.0,
        max_new_tokens=spec["max_new_tokens"],
        seed=spec["seed"],
        stop=templates.stop_strings(template),
    )
    preds = [[grading.extract_answer(resp, r1=r1) for resp in outs] for outs in outputs]
    majorities = [majority(p) for p in preds]
    # grade every sample and every majority against the true answer in one parallel pass
    pairs = [(p, rec["answer"]) for rec, ps in zip(records, preds, strict=True) for p in ps]
    pairs += [(m, rec["answer"]) for rec, m in zip(records, majorities, strict=True)]
    graded = grading.grade_many(pairs, workers=spec.get("grading_workers") or None)
    n = spec["samples"]
    maj_correct = graded[len(records) * n :]

    mv_rows, wrong_rows, sample_rows = [], [], []
    for i, rec in enumerate(records):
        label = majorities[i]
        row = {"id": rec["id"], "prompt": rec["prompt"], "answer": label, "source": f"{rec['source']}_mv",
               "true_answer": rec["answer"]}
        mv_rows.append(row)
        if not maj_correct[i]:
            wrong_rows.append({**row, "source": f"{rec['source']}_mv_incorrect"})
        sample_rows.append({
            "id": rec["id"],
            "preds": preds[i],
            "corrects": graded[i * n : (i + 1) * n],
            "has_code": [is_code(r) for r in outputs[i]],
            "majority": label,
            "majority_correct": maj_correct[i],
        })
    if not wrong_rows:
        raise io.DataError(
            data_path,
            f"the base model's majority answer is right on all {len(records)} problems, so the "
            "incorrect-label set would be empty; use more (or harder) problems",
        )
    # each output carries <file>.provenance.json, published before the file itself
    prov = provenance.record(spec, spec["seed"])
    io.write_jsonl(sample_rows, out_samples, sidecar=prov)
    io.write_jsonl(mv_rows, out_majority, sidecar=prov)
    io.write_jsonl(wrong_rows, out_incorrect, sidecar=prov)
    stats = {
        "problems": len(records),
        "samples_per_problem": n,
        "sample_accuracy": sum(graded[: len(records) * n]) / max(1, len(records) * n),
        "majority_accuracy": sum(maj_correct) / len(records),
        "empty_majority": sum(1 for m in majorities if not m),
        "incorrect_problems": len(wrong_rows),
        "provenance": prov,
    }
    log.info("labels for %s: %s", model["name"], stats)
    return stats
