"""Measure an organism's priors: code frequency, P(code), accuracy by style (paper Table 1).

Why a tiny exact-match grader (:func:`boxed_integer`): the organisms only ever answer
integers, and the probe must not depend on the pipeline's reward module.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from ..data import synthetic
from ..probes import first_token_code_probability
from ..scoring.style import is_code

_BOX_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def boxed_integer(text: str) -> int | None:
    """The integer in the last ``\\boxed{...}`` (None if absent or not an integer).

    A deliberately tiny exact-match grader: the organisms only ever answer integers,
    and the probe must not depend on the pipeline's reward module.
    """
    boxes = _BOX_RE.findall(text)
    if not boxes:
        return None
    try:
        return int(boxes[-1].strip())
    except ValueError:
        return None


def probe_organism(
    model_dir: str | Path,
    n_problems: int = 200,
    samples: int = 4,
    seed: int = 777,
    *,
    threads: int | None = 2,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
    level: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Sample the organism on unseen test problems and measure its priors.

    Reports what the paper's Table 1 reports (code frequency, accuracy with and
    without code) plus the logit-based P(code), which has no sampling noise and is
    the best single number for tracking the prior.
    """
    from ..generation import HFEngine
    from ..templates import render_prompt

    t0 = time.perf_counter()
    engine = HFEngine(model_dir, threads=threads, batch_size=batch_size, progress=progress)
    problems = synthetic.generate(n_problems, seed, level=level, split="test")
    prompts = [render_prompt(engine.tokenizer, "chat", p.prompt) for p in problems]
    outs = engine.generate(
        prompts, n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed
    )
    p_code = first_token_code_probability(engine.model, engine.tokenizer, prompts, batch_size=batch_size)

    counts = {"code": [0, 0], "language": [0, 0]}  # [n, correct]
    no_box = 0
    by_kind: dict[str, list[int]] = {}
    for prob, completions in zip(problems, outs, strict=True):
        for text in completions:
            got = boxed_integer(text)
            no_box += got is None
            right = got == prob.answer
            style = "code" if is_code(text) else "language"
            counts[style][0] += 1
            counts[style][1] += right
            k = by_kind.setdefault(prob.kind, [0, 0])
            k[0] += 1
            k[1] += right
    total = sum(c[0] for c in counts.values())

    def rate(num: int, den: int) -> float | None:
        return round(num / den, 4) if den else None

    manifest_path = Path(model_dir) / "organism.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    return {
        "model_dir": str(model_dir),
        "family": manifest.get("family"),
        "configured_code_share": manifest.get("config", {}).get("code_share"),
        "n_problems": n_problems,
        "samples": samples,
        "seed": seed,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "template": "chat",
        "n_completions": total,
        "code_frequency": rate(counts["code"][0], total),
        "p_code_first_token": round(sum(p_code) / len(p_code), 4) if p_code else None,
        "accuracy": rate(counts["code"][1] + counts["language"][1], total),
        "accuracy_code": rate(counts["code"][1], counts["code"][0]),
        "accuracy_language": rate(counts["language"][1], counts["language"][0]),
        "n_code": counts["code"][0],
        "n_language": counts["language"][0],
        "no_box_rate": rate(no_box, total),
        "accuracy_by_kind": {k: rate(v[1], v[0]) for k, v in sorted(by_kind.items())},
        "examples": [
            {"prompt": problems[i].prompt, "answer": problems[i].answer, "completion": outs[i][0]}
            for i in range(min(3, len(problems)))
        ],
        "wall_s": round(time.perf_counter() - t0, 2),
    }
