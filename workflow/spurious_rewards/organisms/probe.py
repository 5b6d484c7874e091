"""Measure an organism's priors: code frequency, P(code), accuracy by style (paper Table 1).

Why a tiny exact-match grader (:func:`boxed_integer`): the organisms only ever answer
integers, and the probe must not depend on the pipeline's reward module.
"""

from __future__ import annotations

import json
import math
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


def sample_token_entropy(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    samples: int,
    seed: int,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
) -> dict[str, float]:
    """Per-token entropy (nats) of the distributions the model samples its own completions from.

    Why: how much a completion is decided token by token is what separates an organism
    whose style is one near-certain first token from a real model's samples, where
    the style unfolds over many uncertain tokens (docs/organisms.md §7). The entropy of
    softmax(logits / T) (top-k and top-p off, as in the probe's sampling) is taken at every
    sampled position up to and including EOS, as TRL logs it: ``token_entropy`` is the mean
    over all those tokens, ``first_token_entropy`` the mean at the first position.
    Seeded; a sampling pass of its own, so the probe's other samples are unchanged.
    """
    import torch

    from ..grpo_math import completion_mask

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    flat = [p for p in prompts for _ in range(samples)]
    total = first = 0.0
    n_tokens = 0
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(flat), batch_size):
            enc = tokenizer(flat[start : start + batch_size], return_tensors="pt", padding=True,
                            add_special_tokens=False)
            out = model.generate(**enc, do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0,
                                 max_new_tokens=int(max_new_tokens), pad_token_id=pad, eos_token_id=eos,
                                 return_dict_in_generate=True, output_logits=True)
            comp = out.sequences[:, enc["input_ids"].shape[1] :]
            logp = (torch.stack(out.logits, 1).float() / float(temperature)).log_softmax(-1)
            h = -(logp.exp() * logp).nan_to_num().sum(-1)  # 0 * -inf = nan for masked-out logits
            mask = completion_mask(comp, eos)
            total += float((h * mask).sum())
            first += float(h[:, 0].sum())
            n_tokens += int(mask.sum())
    return {
        "token_entropy": round(total / max(n_tokens, 1), 4),
        "first_token_entropy": round(first / max(len(flat), 1), 4),
        "mean_completion_tokens": round(n_tokens / max(len(flat), 1), 2),
    }


def first_word_style_information(texts: list[str], styles: list[str]) -> dict[str, float]:
    """How much the first word of a completion tells about its style (plug-in estimates, nats).

    ``style_entropy`` is H(style) over the samples, ``first_word_style_information`` the
    mutual information I(first word; style). When the first token decides the style the
    two are equal; when the style is spread over later tokens the information is near 0
    (the plug-in estimate is biased up by about (words - 1) / (2 n)).
    """
    n = len(texts)
    if not n:
        return {"style_entropy": 0.0, "first_word_style_information": 0.0}
    joint: dict[tuple[str, str], int] = {}
    for text, sty in zip(texts, styles, strict=True):
        word = text.split()[0] if text.split() else ""
        joint[(word, sty)] = joint.get((word, sty), 0) + 1
    words: dict[str, int] = {}
    marg: dict[str, int] = {}
    for (w, sty), c in joint.items():
        words[w] = words.get(w, 0) + c
        marg[sty] = marg.get(sty, 0) + c
    h_style = -sum(c / n * math.log(c / n) for c in marg.values())
    info = sum(c / n * math.log(c * n / (words[w] * marg[sty])) for (w, sty), c in joint.items())
    return {"style_entropy": round(h_style, 4), "first_word_style_information": round(max(info, 0.0), 4)}


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

    entropy = sample_token_entropy(engine.model, engine.tokenizer, prompts, samples=samples, seed=seed + 1,
                                   temperature=temperature, max_new_tokens=max_new_tokens, batch_size=batch_size)
    flat_texts = [t for completions in outs for t in completions]
    info = first_word_style_information(flat_texts, ["code" if is_code(t) else "language" for t in flat_texts])

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
        # how the style is read (organisms.build.style_measure; absent from older manifests: first_token)
        "style_measure": manifest.get("style_measure", "first_token"),
        **entropy,
        **info,
        "examples": [
            {"prompt": problems[i].prompt, "answer": problems[i].answer, "completion": outs[i][0]}
            for i in range(min(3, len(problems)))
        ],
        "wall_s": round(time.perf_counter() - t0, 2),
    }
