"""Prompt templates: each kind renders as the paper's code does (docs/paper-setup.md §4)."""

from __future__ import annotations

import pytest

from spurious_rewards.templates import (
    BASELINE_TEMPLATES,
    BOXED_INSTRUCTION,
    R1_TEMPLATE,
    TEMPLATES,
    TemplateUnavailable,
    render_prompt,
    stop_strings,
)


class FakeChatTokenizer:
    """Records the call, so the test pins how the chat template is invoked (single user turn)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict], dict]] = []

    def apply_chat_template(self, messages: list[dict], **kwargs: object) -> str:
        self.calls.append((messages, kwargs))
        return f"<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def organism_tokenizer():
    from spurious_rewards.organisms import train_tokenizer

    return train_tokenizer(512)


def test_templates_tuple() -> None:
    assert TEMPLATES == ("chat", "r1", "r1_authors", "plain")


def test_chat_uses_single_user_turn_with_generation_prompt() -> None:
    tok = FakeChatTokenizer()
    out = render_prompt(tok, "chat", "What is 2+3?")
    assert out.endswith("<|im_start|>assistant\n")
    ((messages, kwargs),) = tok.calls
    assert messages == [{"role": "user", "content": "What is 2+3?"}]
    assert kwargs == {"tokenize": False, "add_generation_prompt": True}


def test_chat_with_real_organism_tokenizer(organism_tokenizer) -> None:
    out = render_prompt(organism_tokenizer, "chat", "What is 37+48?")
    assert out == "<|im_start|>user\nWhat is 37+48?<|im_end|>\n<|im_start|>assistant\n"


def test_r1_template_text() -> None:
    out = render_prompt(None, "r1", "What is {x}+1?")
    assert out.startswith("A conversation between User and Assistant. The user asks a question")
    assert out.endswith("<|user|>\nWhat is {x}+1?\n<|assistant|>\n<think>")
    assert "</answer>.\n\n<|user|>" in out
    assert "\\n" not in out  # real newlines, as in the authors' offline eval
    assert R1_TEMPLATE.count("{}") == 1


def test_r1_encodes_with_byte_level_organism_tokenizer(organism_tokenizer) -> None:
    text = render_prompt(organism_tokenizer, "r1", "What is 3*4?")
    ids = organism_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert organism_tokenizer.decode(ids) == text


def test_plain_is_raw_problem() -> None:
    assert render_prompt(None, "plain", "What is 1+1?") == "What is 1+1?"


def test_stop_strings() -> None:
    assert stop_strings("r1") == ["</answer>"]
    assert stop_strings("chat") == []
    assert stop_strings("plain") == []
    stop_strings("r1").append("x")  # callers get a copy
    assert stop_strings("r1") == ["</answer>"]


@pytest.mark.parametrize("fn", [lambda t: render_prompt(None, t, "p"), stop_strings])
def test_unknown_template_names_it_and_allowed(fn) -> None:
    with pytest.raises(ValueError, match=r"'qwen-math'.*chat, plain, boxed, r1, few_shot"):
        fn("qwen-math")


class NoChatTokenizer:
    chat_template = None


EXAMPLES = [{"prompt": "What is 1+2?", "answer": "3"}, {"prompt": "What is 2*5?", "answer": "10"}]


def test_baseline_templates_cover_the_audit_set() -> None:
    assert BASELINE_TEMPLATES == ("chat", "plain", "boxed", "r1", "few_shot", "r1_authors")
    assert set(TEMPLATES) <= set(BASELINE_TEMPLATES)


def test_boxed_inside_chat_template(organism_tokenizer) -> None:
    out = render_prompt(organism_tokenizer, "boxed", "What is 37+48?")
    assert out == (
        "<|im_start|>user\nWhat is 37+48?\nPlease reason step by step, and put your final answer "
        "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_boxed_without_chat_template_is_problem_plus_instruction() -> None:
    assert render_prompt(NoChatTokenizer(), "boxed", "What is 1+1?") == f"What is 1+1?\n{BOXED_INSTRUCTION}"


def test_chat_without_chat_template_is_unavailable() -> None:
    with pytest.raises(TemplateUnavailable, match="no chat template"):
        render_prompt(NoChatTokenizer(), "chat", "What is 1+1?")


def test_few_shot_renders_examples_then_problem_and_stops_at_next_problem() -> None:
    out = render_prompt(None, "few_shot", "What is {a}?", examples=EXAMPLES)
    assert out == (
        "Problem: What is 1+2?\nSolution: The final answer is $\\boxed{3}$.\n\n"
        "Problem: What is 2*5?\nSolution: The final answer is $\\boxed{10}$.\n\n"
        "Problem: What is {a}?\nSolution:"
    )
    assert stop_strings("few_shot") == ["\n\nProblem:"]
    with pytest.raises(ValueError, match="at least one example"):
        render_prompt(None, "few_shot", "p")


@pytest.mark.parametrize("template", BASELINE_TEMPLATES)
def test_every_baseline_template_renders_for_the_organism(organism_tokenizer, template) -> None:
    text = render_prompt(organism_tokenizer, template, "What is 3*4?", examples=EXAMPLES)
    assert "What is 3*4?" in text
    ids = organism_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert organism_tokenizer.decode(ids) == text
