"""Logit probes of a model's reasoning style (no sampling noise).

P(the first completion token opens a code fence) is exact for the organisms, whose style
is chosen by their first token; training (TRL backend), the organism probe and the clip
probe read it from here. For real models, which write prose before their code, the
sampled code frequency (:func:`spurious_rewards.scoring.style.is_code`) is the measure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["code_token_ids", "first_token_code_probability", "p_code"]


def code_token_ids(tokenizer: Any) -> list[int]:
    """Vocabulary ids whose text opens a code fence (the code/language choice is the first token)."""
    ids = []
    for tid in range(len(tokenizer)):
        text = tokenizer.decode([tid])
        if text.lstrip().startswith("```"):
            ids.append(tid)
    return ids


def first_token_code_probability(
    model: Any, tokenizer: Any, prompts: Sequence[str], batch_size: int = 256, code_ids: Sequence[int] | None = None
) -> list[float]:
    """P(first completion token opens a code block) per prompt, from the logits (no sampling noise).

    ``code_ids`` (from :func:`code_token_ids`) saves the vocabulary scan when called
    often with one tokenizer (a real model's vocabulary has ~150k entries).
    """
    import torch

    ids = torch.tensor(code_token_ids(tokenizer) if code_ids is None else list(code_ids), dtype=torch.long)
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(0, len(prompts), batch_size):
                enc = tokenizer(
                    list(prompts[i : i + batch_size]),
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                )
                # logits of the last position only: a real vocabulary (152k) over whole prompts would
                # take tens of GB (bit-identical to slicing the full logits)
                out_ = model(**{k: v.to(device) for k, v in enc.items()}, logits_to_keep=1)
                logits = out_.logits[:, -1, :].float()
                out.extend(torch.softmax(logits, dim=-1)[:, ids.to(device)].sum(-1).tolist())
    finally:
        tokenizer.padding_side = side
    return out


#: code-fence ids per tokenizer (a real vocabulary takes ~150k decodes to scan; training probes every step)
_CODE_IDS: dict[int, tuple[Any, list[int]]] = {}


def p_code(model: Any, tokenizer: Any, prompts: Sequence[str]) -> float:
    """Mean probability that the first response token opens a code block (no sampling noise)."""
    if not prompts:
        return float("nan")
    held = _CODE_IDS.get(id(tokenizer))
    if held is None or held[0] is not tokenizer:
        held = _CODE_IDS[id(tokenizer)] = (tokenizer, code_token_ids(tokenizer))
    was_training = model.training
    model.eval()
    probs = first_token_code_probability(model, tokenizer, prompts, code_ids=held[1])
    if was_training:
        model.train()
    return sum(probs) / len(probs)
