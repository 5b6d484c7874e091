"""Majority-vote and incorrect labels (docs/paper-setup.md §3.2; quirks 9, 17 and 18).

The base model samples N responses per training problem; the most common
non-empty extracted answer is the problem's label (ties go to the first seen,
as the authors' ``Counter.most_common`` did). The ``incorrect`` set keeps only
the problems whose majority answer is wrong, labelled with that wrong answer,
so the labels are still probable outputs of the model.

Three choices follow the authors' scripts unless the config says otherwise
(``labelling`` in the schema; docs/fidelity.md):

* ``vote``: ``normalized`` counts votes on the answers after the Qwen parser's
  ``strip_string`` (their extraction applied it before ``Counter``), so
  ``\\dfrac{1}{2}``, ``\\frac12`` and ``1/2`` are three votes for one answer;
  ``raw`` counts the extracted strings as written. The label written is a raw
  answer of the winning class: its most frequent spelling, ties to the first
  seen (math-verify grades written LaTeX better than ``strip_string``'s output,
  which drops units and ``\\text{}``).
* ``empty_majority``: when no sample has an answer the majority is empty.
  ``authors`` keeps the row (the ground-truth reward then scores 1 a response
  with no extractable answer, as their grader did), ``zero`` keeps it and scores
  every response 0, ``drop`` removes it from both sets.
* ``holdout``: the authors wrote the first 100 records of each label set to a
  test split; the first ``holdout`` rows of each set are left out of training.

Every run writes a stats file (counts of empty labels, held-out rows, problems
where the raw and the normalised vote disagree), logged as well.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from .. import data, generation, io, provenance, templates
from .. import scoring as grading
from ..scoring.normalize import vote_key
from ..scoring.style import is_code

log = logging.getLogger(__name__)

VOTES = ("normalized", "raw")
EMPTY_MAJORITY = ("authors", "drop", "zero")


def majority(preds: list[str | None], vote: str = "normalized") -> str:
    """The label of the most common answer; "" when no sample has an answer.

    ``raw``: the most common non-empty string, ties to the first seen. ``normalized``: the
    most common class of answers with the same :func:`~spurious_rewards.scoring.normalize.vote_key`
    (answers that normalise to "" do not vote), ties to the class seen first; the label is
    the class's most frequent raw spelling, ties to the first seen.
    """
    if vote == "raw":
        votes = Counter(p for p in preds if p)
        return votes.most_common(1)[0][0] if votes else ""
    if vote != "normalized":
        raise ValueError(f"labelling.vote: {vote!r} is not allowed; allowed values: {', '.join(VOTES)}")
    classes: dict[str, Counter] = {}
    for p in preds:
        key = vote_key(p)
        if key:
            classes.setdefault(key, Counter())[p] += 1
    if not classes:
        return ""
    # dicts keep first-seen order and max() returns the first maximum: ties go to the first seen
    winner = max(classes.values(), key=lambda c: sum(c.values()))
    return winner.most_common(1)[0][0]


def label_sets(
    records: list[dict], majorities: list[str], majority_correct: list[bool], *, empty_majority: str, holdout: int
) -> tuple[list[dict], list[dict], dict]:
    """The majority-vote and incorrect training rows, and their counts.

    ``holdout`` drops the first rows of *each* set after filtering, as the authors' split of
    each written set did (so the two sets hold out different problems).
    """
    if empty_majority not in EMPTY_MAJORITY:
        raise ValueError(f"labelling.empty_majority: {empty_majority!r} is not allowed; allowed values: "
                         f"{', '.join(EMPTY_MAJORITY)}")
    if not isinstance(holdout, int) or isinstance(holdout, bool) or holdout < 0:
        raise ValueError(f"labelling.holdout: {holdout!r} must be an integer >= 0")
    mv_rows, wrong_rows = [], []
    dropped = 0
    for rec, label, right in zip(records, majorities, majority_correct, strict=True):
        if not label and empty_majority == "drop":
            dropped += 1
            continue
        row = {"id": rec["id"], "prompt": rec["prompt"], "answer": label, "source": f"{rec['source']}_mv",
               "true_answer": rec["answer"]}
        mv_rows.append(row)
        if not right:
            wrong_rows.append({**row, "source": f"{rec['source']}_mv_incorrect"})
    held = {"majority_vote": [r["id"] for r in mv_rows[:holdout]],
            "incorrect": [r["id"] for r in wrong_rows[:holdout]]}
    mv_rows, wrong_rows = mv_rows[holdout:], wrong_rows[holdout:]
    counts = {
        "empty_majority_problems": sum(1 for m in majorities if not m),
        "dropped_empty": dropped,
        "rows": {"majority_vote": len(mv_rows), "incorrect": len(wrong_rows)},
        "empty_labels": {"majority_vote": sum(1 for r in mv_rows if not r["answer"]),
                         "incorrect": sum(1 for r in wrong_rows if not r["answer"])},
        "held_out": held,
    }
    return mv_rows, wrong_rows, counts


def label_majority(
    spec: dict,
    *,
    data_path: str | Path,
    out_majority: str | Path,
    out_incorrect: str | Path,
    out_samples: str | Path,
    out_stats: str | Path | None = None,
) -> dict:
    """Sample, vote, grade; write the two label sets, the per-problem samples and (optionally) the stats."""
    if spec.get("template") not in ("model", "plain"):
        raise ValueError(f"labelling.template: {spec.get('template')!r} is not allowed; allowed values: model, plain")
    vote = spec.get("vote", "normalized")
    if vote not in VOTES:
        raise ValueError(f"labelling.vote: {vote!r} is not allowed; allowed values: {', '.join(VOTES)}")
    empty_rule = spec.get("empty_majority", "zero")
    holdout = spec.get("holdout", 0)
    label_sets([], [], [], empty_majority=empty_rule, holdout=holdout)  # bad values fail before sampling
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
    majorities = [majority(p, vote) for p in preds]
    other = [majority(p, "raw" if vote == "normalized" else "normalized") for p in preds]
    # grade every sample and every majority against the true answer in one parallel pass
    pairs = [(p, rec["answer"]) for rec, ps in zip(records, preds, strict=True) for p in ps]
    pairs += [(m, rec["answer"]) for rec, m in zip(records, majorities, strict=True)]
    graded = grading.grade_many(pairs, workers=spec.get("grading_workers") or None)
    n = spec["samples"]
    maj_correct = graded[len(records) * n :]

    mv_rows, wrong_rows, counts = label_sets(records, majorities, maj_correct, empty_majority=empty_rule,
                                             holdout=holdout)
    sample_rows = []
    for i, rec in enumerate(records):
        sample_rows.append({
            "id": rec["id"],
            "preds": preds[i],
            "corrects": graded[i * n : (i + 1) * n],
            "has_code": [is_code(r) for r in outputs[i]],
            "majority": majorities[i],
            "majority_correct": maj_correct[i],
        })
    if not wrong_rows:
        why = (f"the base model's majority answer is right on all {len(records)} problems" if not any(
            not c for c in maj_correct) else f"labelling.holdout = {holdout} leaves no row")
        raise io.DataError(
            data_path,
            f"{why}, so the incorrect-label set would be empty; use more (or harder) problems",
        )
    if not mv_rows:
        raise io.DataError(data_path, f"labelling.holdout = {holdout} (or empty_majority: drop) leaves no "
                           "majority-vote row; use more problems")
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
        "vote": vote,
        "empty_majority_rule": empty_rule,
        "holdout": holdout,
        "empty_majority": counts["empty_majority_problems"],
        "incorrect_problems": len(wrong_rows),
        # problems where a raw-string vote and a normalised vote pick different answers
        "raw_vs_normalized_disagreements": sum(
            1 for a, b in zip(majorities, other, strict=True) if vote_key(a) != vote_key(b)),
        **{k: v for k, v in counts.items() if k != "empty_majority_problems"},
        "provenance": prov,
    }
    if out_stats is not None:
        io.write_json(stats, out_stats)
    log.info("labels for %s: %s", model["name"], {k: v for k, v in stats.items() if k != "held_out"})
    return stats
