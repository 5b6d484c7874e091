"""Prompt templates of the paper (shared/reference/paper-setup.md §4).

Why a module of its own: training, evaluation and the organism probe must render
a problem the same way, or accuracy differences would come from the prompt, not
the reward. Each template kind also fixes its stop strings, which travel with it.
"""

from __future__ import annotations

from typing import Any

#: The template kinds the pipeline knows.
TEMPLATES: tuple[str, ...] = ("chat", "r1", "plain")

#: The authors' "R1-style" ``--input_template`` with real newlines (as in their
#: offline eval, paper-setup.md §7); ``{}`` is the problem. It ends inside the
#: ``<think>`` block so the model continues with its reasoning.
R1_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>.\n\n<|user|>\n{}\n<|assistant|>\n<think>"
)

_STOPS: dict[str, list[str]] = {"chat": [], "r1": ["</answer>"], "plain": []}


def _check(template: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(TEMPLATES)}")


def render_prompt(tokenizer: Any, template: str, problem: str) -> str:
    """The prompt text for ``problem`` under ``template`` (chat needs the tokenizer's own template).

    ``chat`` is a single user turn with ``add_generation_prompt=True``, exactly as
    the authors' code calls it, so the model's default system prompt (if any) is
    included. ``r1`` substitutes the problem verbatim (no ``str.format``: problems
    may contain braces). ``plain`` is the raw problem.
    """
    _check(template)
    if template == "chat":
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
        )
        if not isinstance(text, str):  # defensive: some versions return a list for batched input
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text
    if template == "r1":
        head, tail = R1_TEMPLATE.split("{}")
        return head + problem + tail
    return problem


def stop_strings(template: str) -> list[str]:
    """Stop strings for ``template`` (kept in the output, like vLLM's include_stop_str_in_output)."""
    _check(template)
    return list(_STOPS[template])
