"""Prompt templates of the paper (docs/paper-setup.md §4) and the audit's baselines.

Why a module of its own: training, evaluation and the organism probe must render
a problem the same way, or accuracy differences would come from the prompt, not
the reward. Each template kind also fixes its stop strings, which travel with it.

Training uses ``chat``, ``r1``, ``r1_authors`` or ``plain`` (the paper's choices;
``r1_authors`` is ``r1`` as the authors' launch script really passed it, see
:data:`R1_AUTHORS_TEMPLATE`). The
prompt-robust baselines of the audit add two more, because a gain measured
against a badly prompted base model overstates RL:

* ``boxed``: the Qwen-Math instruction "Please reason step by step, and put your
  final answer within \\boxed{}." after the problem (inside the chat template
  when the tokenizer has one, else after the raw problem);
* ``few_shot``: ``shots`` solved examples (problem and boxed answer) before the
  problem, as plain text; generation stops when the model starts a new problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Templates a model can be trained and evaluated with.
TEMPLATES: tuple[str, ...] = ("chat", "r1", "r1_authors", "plain")

#: The <think>/<answer> templates: answers are read from the answer span, generation stops at </answer>.
R1_TEMPLATES: tuple[str, ...] = ("r1", "r1_authors")

#: Every template the prompt-robust baselines can evaluate (training templates first).
BASELINE_TEMPLATES: tuple[str, ...] = ("chat", "plain", "boxed", "r1", "few_shot", "r1_authors")

#: The authors' "R1-style" ``--input_template`` with real newlines (as in their
#: offline eval, docs/paper-setup.md, quirk 10); ``{}`` is the problem. It ends inside the
#: ``<think>`` block so the model continues with its reasoning.
R1_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>.\n\n<|user|>\n{}\n<|assistant|>\n<think>"
)

#: The R1 template exactly as the authors' Llama launch script passed it: the script writes
#: ``\n`` inside bash double quotes, which bash does not expand, so the model saw a literal
#: backslash followed by ``n`` (two characters), not a newline. The paper's numbers for the
#: base Llama/OLMo models come from this prompt, in training and in their in-training eval.
R1_AUTHORS_TEMPLATE = R1_TEMPLATE.replace("\n", "\\n")

#: Qwen2.5-Math's own CoT instruction (its chat template's default system prompt).
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

#: How a few-shot prompt labels each part; the stop string is the next problem's label.
FEW_SHOT_PROBLEM, FEW_SHOT_SOLUTION = "Problem:", "Solution:"

_STOPS: dict[str, list[str]] = {
    "chat": [],
    "r1": ["</answer>"],
    "r1_authors": ["</answer>"],
    "plain": [],
    "boxed": [],
    "few_shot": [f"\n\n{FEW_SHOT_PROBLEM}"],
}


class TemplateUnavailable(ValueError):
    """The template cannot be rendered for this tokenizer (e.g. ``chat`` without a chat template)."""


def _check(template: str, allowed: Sequence[str] = BASELINE_TEMPLATES) -> None:
    if template not in allowed:
        raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(allowed)}")


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``apply_chat_template`` can work (HF tokenizers without one have ``chat_template = None``)."""
    if not hasattr(tokenizer, "apply_chat_template"):
        return False
    return getattr(tokenizer, "chat_template", "unset") not in (None, "")


def is_r1(template: str) -> bool:
    """True for the <think>/<answer> templates (answer span, stop at ``</answer>``)."""
    return template in R1_TEMPLATES


def _chat(tokenizer: Any, content: str) -> str:
    if not has_chat_template(tokenizer):
        raise TemplateUnavailable("the tokenizer has no chat template")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(text, str):  # defensive: some versions return a list for batched input
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def few_shot_block(examples: Sequence[dict]) -> str:
    """The solved examples of a few-shot prompt (records with ``prompt`` and ``answer``).

    Our datasets carry answers, not worked solutions, so each example shows the
    problem and its boxed answer: it teaches the answer format, not a reasoning style.
    """
    return "".join(
        f"{FEW_SHOT_PROBLEM} {ex['prompt']}\n{FEW_SHOT_SOLUTION} The final answer is $\\boxed{{{ex['answer']}}}$.\n\n"
        for ex in examples
    )


def render_prompt(tokenizer: Any, template: str, problem: str, *, examples: Sequence[dict] = ()) -> str:
    """The prompt text for ``problem`` under ``template`` (chat needs the tokenizer's own template).

    ``chat`` is a single user turn with ``add_generation_prompt=True``, exactly as
    the authors' code calls it, so the model's default system prompt (if any) is
    included. ``r1`` substitutes the problem verbatim (no ``str.format``: problems
    may contain braces); ``r1_authors`` likewise, with the authors' literal ``\\n``. ``plain`` is the raw problem. ``boxed`` and ``few_shot``
    (``examples`` = the solved examples) are the audit's extra baselines.
    Raises :class:`TemplateUnavailable` when ``chat`` meets a tokenizer without one.
    """
    _check(template)
    if template == "chat":
        return _chat(tokenizer, problem)
    if is_r1(template):
        head, tail = (R1_TEMPLATE if template == "r1" else R1_AUTHORS_TEMPLATE).split("{}")
        return head + problem + tail
    if template == "boxed":
        content = f"{problem}\n{BOXED_INSTRUCTION}"
        return _chat(tokenizer, content) if has_chat_template(tokenizer) else content
    if template == "few_shot":
        if not examples:
            raise ValueError("the few_shot template needs at least one example")
        return f"{few_shot_block(examples)}{FEW_SHOT_PROBLEM} {problem}\n{FEW_SHOT_SOLUTION}"
    return problem


def stop_strings(template: str) -> list[str]:
    """Stop strings for ``template`` (kept in the output, like vLLM's include_stop_str_in_output)."""
    _check(template)
    return list(_STOPS[template])
