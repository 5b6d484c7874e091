"""Prompt templates: each kind renders as the paper's code does (docs/paper-setup.md §4)."""

from __future__ import annotations

import pytest

from spurious_rewards.templates import (
    BASELINE_TEMPLATES,
    BOXED_INSTRUCTION,
    LIPSUM_TEXT,
    LOREM_TEXT,
    PLACEHOLDER_TEMPLATES,
    R1_TEMPLATE,
    TEMPLATES,
    TemplateUnavailable,
    few_shot_solution,
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
    assert BASELINE_TEMPLATES == ("chat", "plain", "boxed", "r1", "few_shot", "r1_authors", "lipsum", "lorem")
    assert set(TEMPLATES) <= set(BASELINE_TEMPLATES)
    assert set(PLACEHOLDER_TEMPLATES) <= set(BASELINE_TEMPLATES)


def test_the_schema_allows_exactly_the_baseline_templates() -> None:
    """The config's enum and the renderer's list are one set: no template the config accepts fails to render."""
    from spurious_rewards import config

    prop = config.load_schema()["properties"]["audit"]["properties"]["baselines"]["properties"]["templates"]
    assert tuple(prop["items"]["enum"]) == BASELINE_TEMPLATES
    assert "lipsum" in prop["default"]


def test_lipsum_is_the_lipsum_packages_first_paragraph_then_the_problem() -> None:
    out = render_prompt(NoChatTokenizer(), "lipsum", "What is {x}+1?")
    assert out == LIPSUM_TEXT + "\n\nWhat is {x}+1?"  # braces kept: substituted verbatim, never str.format
    # the LaTeX lipsum package's paragraph 1 ("consectetuer", not the classic "consectetur")
    assert LIPSUM_TEXT.startswith("Lorem ipsum dolor sit amet, consectetuer adipiscing elit. Ut purus elit,")
    assert LIPSUM_TEXT.endswith("Duis eget orci sit amet orci dignissim rutrum.")
    assert "\n" not in LIPSUM_TEXT and "  " not in LIPSUM_TEXT
    assert "boxed" not in out and "step" not in out  # no instruction at all: that is the point
    assert stop_strings("lipsum") == [] and stop_strings("lorem") == []


def test_lorem_is_the_classic_passage_in_the_same_layout() -> None:
    out = render_prompt(NoChatTokenizer(), "lorem", "What is 2+2?")
    assert out == LOREM_TEXT + "\n\nWhat is 2+2?"
    assert LOREM_TEXT.startswith("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod")
    assert LOREM_TEXT.endswith("id est laborum.") and LOREM_TEXT != LIPSUM_TEXT


@pytest.mark.parametrize("template", PLACEHOLDER_TEMPLATES)
def test_placeholder_prompts_sit_in_the_chat_template(organism_tokenizer, template) -> None:
    out = render_prompt(organism_tokenizer, template, "What is 37+48?")
    filler = LIPSUM_TEXT if template == "lipsum" else LOREM_TEXT
    assert out == f"<|im_start|>user\n{filler}\n\nWhat is 37+48?<|im_end|>\n<|im_start|>assistant\n"


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


def test_few_shot_shows_worked_solutions_when_the_examples_have_them() -> None:
    from spurious_rewards.data import synthetic

    solved = [p.record("arith", solution=True) for p in synthetic.generate(2, 0, level=2)]
    out = render_prompt(None, "few_shot", "What is 5+5?", examples=solved)
    for ex in solved:
        # the generator's steps, then its boxed answer: a way of solving, not only the answer
        assert f"Problem: {ex['prompt']}\nSolution: {ex['solution']}\n\n" in out
        assert ex["solution"].endswith(f"\\boxed{{{ex['answer']}}}.")
    assert "The final answer is" not in out
    assert out.endswith("Problem: What is 5+5?\nSolution:")


def test_few_shot_solution_without_a_box_gets_the_answer_and_empty_falls_back() -> None:
    words = {"prompt": "p", "answer": "7", "solution": "Seven, by counting."}
    assert few_shot_solution(words) == "Seven, by counting.\nThe final answer is $\\boxed{7}$."
    boxed = {"prompt": "p", "answer": "7", "solution": "So $x=\\boxed{7}$."}
    assert few_shot_solution(boxed) == "So $x=\\boxed{7}$."
    assert few_shot_solution({"prompt": "p", "answer": "7", "solution": "  "}) == "The final answer is $\\boxed{7}$."
    assert few_shot_solution({"prompt": "p", "answer": "7"}) == "The final answer is $\\boxed{7}$."


@pytest.mark.parametrize("template", BASELINE_TEMPLATES)
def test_every_baseline_template_renders_for_the_organism(organism_tokenizer, template) -> None:
    text = render_prompt(organism_tokenizer, template, "What is 3*4?", examples=EXAMPLES)
    assert "What is 3*4?" in text
    ids = organism_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert organism_tokenizer.decode(ids) == text
