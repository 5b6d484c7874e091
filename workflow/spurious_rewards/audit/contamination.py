"""Partial-prompt contamination audit (Wu et al. 2025, "Reasoning or Memorization?").

A model that has memorized a benchmark can finish its problems from a prefix:
given the first 60% of each MATH-500 problem, Qwen2.5-Math-7B regenerated the
rest exactly 54.6% of the time and still answered 53.6% correctly (Llama3.1-8B:
3.8% and 2.4%). This module shows each base model the first ``fraction`` of
every problem as raw text (no template: a chat turn would end the problem for
it), lets it continue greedily, and scores the continuation three ways:

* **exact match**: the continuation starts with the hidden remainder (whitespace
  runs collapsed on both sides);
* **ROUGE-L** F1 between the remainder and the continuation's first as many
  tokens (``rouge-score``, with a tokenizer that keeps numbers and operators:
  its default drops every non-alphanumeric character, i.e. most of a formula);
* **partial accuracy**: the final answer the continuation gives is right.

Run on a benchmark from the contamination-free generator it is the control: no
model can have seen those problems, so any rate there is what chance and skill
alone produce.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from .. import data, generation, io, provenance, stats
from .. import scoring as grading

log = logging.getLogger(__name__)

_WS = re.compile(r"\s+")
#: ROUGE-L compares at most this many tokens of the rest: its LCS table is quadratic, and no
#: benchmark problem's rest is near this long (a hostile megabyte "problem" would need ~10^11 cells).
MAX_ROUGE_TOKENS = 1000
_TOKEN = re.compile(r"\w+|[^\w\s]")


def split_problem(text: str, fraction: float) -> tuple[str, str]:
    """``(prefix, remainder)``: ``prefix`` is about the first ``fraction`` of the characters.

    The cut moves back to the nearest whitespace so no word is split (the
    whitespace opens the remainder, as a tokenizer would see it); a problem with
    no whitespace before the cut is cut mid-word. Either part may be empty only
    for problems shorter than two characters.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = round(len(text) * fraction)
    cut = min(max(cut, 1), max(len(text) - 1, 0))
    ws = max((m.start() for m in _WS.finditer(text, 0, cut + 1) if 0 < m.start() <= cut), default=None)
    if ws is not None:
        cut = ws
    return text[:cut], text[cut:]


def normalize(text: str) -> str:
    return _WS.sub(" ", text).strip()


class _MathTokenizer:
    """rouge-score's tokenizer interface: words, numbers and single symbols (``3+4`` -> 3, +, 4)."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


_scorer = None


def _rouge():
    global _scorer
    if _scorer is None:
        from rouge_score import rouge_scorer

        _scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_MathTokenizer())
    return _scorer


def score_continuation(remainder: str, continuation: str) -> dict:
    """Exact match and ROUGE-L of ``continuation`` against the hidden ``remainder``.

    ROUGE-L compares the remainder (its first :data:`MAX_ROUGE_TOKENS` tokens) with
    the continuation cut to the same token count, so a model that goes on to solve
    the problem is not penalized for the solution that follows.
    """
    rem, cont = normalize(remainder), normalize(continuation)
    exact = bool(rem) and cont.startswith(rem)
    rem_tokens = _MathTokenizer().tokenize(rem)[:MAX_ROUGE_TOKENS]
    if not rem_tokens:
        return {"exact": exact, "rouge_l": 1.0 if exact else 0.0}
    head_tokens = _MathTokenizer().tokenize(cont)[: len(rem_tokens)]
    rouge = _rouge().score(" ".join(rem_tokens), " ".join(head_tokens))["rougeL"].fmeasure if head_tokens else 0.0
    return {"exact": exact, "rouge_l": float(rouge)}


def summarize(rows: list[dict], n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Rates with bootstrap CIs over problems (the rows of one dataset)."""
    import numpy as np

    out: dict = {"problems": len(rows)}
    for key in ("exact", "rouge_l", "correct"):
        x = np.array([float(r[key]) for r in rows])
        if len(x):
            ci = stats.mean_ci(x, n_boot, seed, alpha)
            out[key] = {"mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high}
        else:
            out[key] = {"mean": None, "ci_low": None, "ci_high": None}
    return out


def audit(spec: dict, *, model_dir: str, out_summary: str | Path, out_samples: str | Path,
          engine=None) -> dict:  # noqa: ANN001
    """Run the audit of one base model on every dataset in ``spec['datasets']``.

    ``engine`` (anything with ``generate`` and ``tokenizer``) replaces the configured
    generation engine; the tests use it to plant a model that has memorized everything.
    """
    cfg = spec["contamination"]
    ev = spec["evaluation"]
    if engine is None:
        engine = generation.make_engine(model_dir, ev["engine"], threads=ev.get("threads"),
                                        batch_size=ev["batch_size"], seed=ev["seed"])
    results = []
    with io.atomic_output(out_samples) as tmp:
        Path(tmp).mkdir(parents=True)
        provenance.write_sidecar(tmp, spec, ev["seed"])
        for name, path in spec["datasets"].items():
            t0 = time.time()
            records = data.load_records(path)
            if cfg.get("limit"):
                records = records[: cfg["limit"]]
            parts = [split_problem(r["prompt"], cfg["fraction"]) for r in records]
            keep = [i for i, (p, rest) in enumerate(parts) if p and normalize(rest)]
            outs = engine.generate([parts[i][0] for i in keep], n=1, temperature=0.0,
                                   max_new_tokens=cfg["max_new_tokens"], seed=ev["seed"])
            preds = [grading.extract_answer(o[0]) for o in outs]
            correct = grading.grade_many([(p, records[i]["answer"]) for p, i in zip(preds, keep, strict=True)],
                                         workers=ev.get("grading_workers") or None)
            rows = []
            for j, i in enumerate(keep):
                prefix, rest = parts[i]
                rows.append({"id": records[i]["id"], "prefix": prefix, "remainder": rest,
                             "continuation": outs[j][0], **score_continuation(rest, outs[j][0]),
                             "pred": preds[j], "correct": correct[j]})
            io.write_jsonl(rows, Path(tmp) / f"{name}.jsonl.gz")
            summary = summarize(rows, seed=ev["seed"], alpha=spec.get("alpha", 0.05))
            results.append({"dataset": name, "skipped": len(records) - len(keep), **summary,
                            "seconds": round(time.time() - t0, 2)})
            log.info("%s: exact %.3f rouge-L %.3f partial accuracy %.3f (%d problems)", name,
                     summary["exact"]["mean"] or 0, summary["rouge_l"]["mean"] or 0,
                     summary["correct"]["mean"] or 0, len(rows))
    out = {"model": spec["model"]["name"], "fraction": cfg["fraction"], "results": results,
           "provenance": provenance.provenance(provenance.spec_hash(spec), ev["seed"])}
    io.write_json(out, out_summary)
    return out
