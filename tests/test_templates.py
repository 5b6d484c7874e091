"""Prompt templates: each kind renders as the paper's code does (paper-setup.md §4)."""

from __future__ import annotations

import pytest

from spurious_rewards.templates import R1_TEMPLATE, TEMPLATES, render_prompt, stop_strings


class FakeChatTokenizer:
    """Records the call, so the test pins how the chat template is invoked (single user turn)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict], dict]] = []

    def apply_chat_template(self, messages: list[dict], **kwargs: object) -> str:
        self.calls.append((messages, kwargs))
        return f"<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def organism_tokenizer():
    from spurious_rewards.organism import train_tokenizer

    return train_tokenizer(512)


def test_templates_tuple() -> None:
    assert TEMPLATES == ("chat", "r1", "plain")


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
    with pytest.raises(ValueError, match=r"'qwen-math'.*chat, r1, plain"):
        fn("qwen-math")
