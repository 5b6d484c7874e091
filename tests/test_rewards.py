"""spurious_rewards.scoring.rewards: each reward's definition, the spec language, reproducible randomness,
and the linear-time repetition detector against the paper's quadratic one."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import random
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spurious_rewards.scoring import rewards
from spurious_rewards.scoring.rewards import (
    REWARD_NAMES,
    Reward,
    RewardContext,
    detect_repetition,
    format_reward,
    ground_truth,
    no_python,
    no_repetition,
    parse_reward,
    python_reward,
    random_reward,
    reward_stats,
    score,
)

ANY_CHAR = st.characters(exclude_categories=())  # NUL and lone surrogates included
FRAGMENTS = [
    "\\boxed{",
    "boxed",
    "{",
    "}",
    "$",
    "<answer>",
    "</answer>",
    "<think>",
    "Python",
    "pyth",
    "The answer is ",
    "\n",
    "5",
    "42",
    "abcdefghij" * 10,
]
ANY_TEXT = st.text(ANY_CHAR) | st.lists(
    st.sampled_from(FRAGMENTS) | st.text(ANY_CHAR, max_size=4), max_size=25
).map("".join)
R1 = RewardContext(r1=True)


# ---------------------------------------------------------------------------- base rewards


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("\\boxed{}", 0.0),
        ("boxed{3}", 1.0),
        ("The answer is \\boxed{3}.", 1.0),
        ("no box at all, 42", 0.0),
        ("\\boxed{ }", 0.0),
        ("\\boxed{.}", 0.0),
        ("\\boxed{\\%}", 0.0),
        ("\\boxed{\\text{ cm}}", 0.0),
        ("\\boxed{x=}", 0.0),
        ("\\boxed 5$", 1.0),
        ("\\boxed$", 0.0),
        ("\\boxed{3} and then \\boxed{}", 0.0),  # only the last box counts
        ("\\boxed{} and then \\boxed{3}", 1.0),
        ("\\boxed{\\frac{1}{2}}", 1.0),
        ("\\boxed{3", 1.0),  # unbalanced: the rest of the text
    ],
)
def test_format(response: str, expected: float) -> None:
    assert format_reward(response, None, RewardContext()) == expected


def test_format_r1_uses_answer_span() -> None:
    assert format_reward("<think>\\boxed{2}</think><answer>2</answer>", None, R1) == 0.0
    assert format_reward("<think>x</think><answer>\\boxed{2}</answer>", None, R1) == 1.0
    assert format_reward("<answer>\\boxed{2}</answer> \\boxed{}", None, R1) == 1.0
    assert format_reward("<answer>\\boxed{2}</answer> \\boxed{}", None, RewardContext()) == 0.0


@pytest.mark.parametrize(
    ("response", "label", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("so \\boxed{0.5}", "\\frac{1}{2}", 1.0),
        ("\\boxed{025}", "25", 1.0),  # AIME
        ("\\boxed{25}", "025", 1.0),
        ("\\boxed{142}", "142.0", 1.0),  # AMC
        ("no box, the last number is 7", "7", 1.0),  # \boxed is not required
        ("\\boxed{8}", "7", 0.0),
        ("\\boxed{}", "7", 0.0),
        ("nothing", "7", 0.0),
        ("\\boxed{7}", None, 0.0),
        ("\\boxed{7}", "", 0.0),
        ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\sqrt{2}/2", 1.0),
    ],
)
def test_ground_truth(response: str, label: str | None, expected: float) -> None:
    assert ground_truth(response, label, RewardContext()) == expected


def test_ground_truth_r1() -> None:
    text = "<think>maybe \\boxed{3}</think><answer>4</answer>"
    assert ground_truth(text, "4", R1) == 1.0
    assert ground_truth(text, "3", R1) == 0.0
    assert ground_truth(text, "3", RewardContext()) == 1.0  # without r1 the last box wins
    assert ground_truth("<answer>7</answer> 8", "7", R1) == 1.0  # tag cut, not rstrip


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Let me use Python.", 1.0),
        ("PYTHON", 1.0),
        ("```python\nprint(1)```", 1.0),
        ("pyth on", 0.0),
        ("", 0.0),
    ],
)
def test_python_and_no_python(response: str, expected: float) -> None:
    ctx = RewardContext()
    assert python_reward(response, None, ctx) == expected
    assert no_python(response, None, ctx) == 1.0 - expected


def test_no_repetition() -> None:
    ctx = RewardContext()
    assert no_repetition("The answer is 5. " + "I am stuck. " * 10, None, ctx) == 0.0
    assert no_repetition("The answer is 5. " + "I am stuck. " * 9, None, ctx) == 1.0
    assert no_repetition("a" * 100, None, ctx) == 0.0  # period 1 is also period 10
    assert no_repetition("a" * 99, None, ctx) == 1.0


# ---------------------------------------------------------------------------- random


def _draws(spec: str, n: int = 200, seed: int = 0) -> list[float]:
    ctxs = [RewardContext(seed=seed, prompt_id=f"p{i // 8}", sample_index=i % 8) for i in range(n)]
    return score(spec, ["same text"] * n, None, ctxs)


def test_random_is_reproducible_across_calls_threads_and_processes() -> None:
    expected = _draws("random(0.5)")
    assert _draws("random(0.5)") == expected
    assert 0 < sum(expected) < len(expected)
    reward = parse_reward("random(0.5)")
    ctxs = [RewardContext(prompt_id=f"p{i // 8}", sample_index=i % 8) for i in range(200)]
    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(lambda c: reward("x", None, c), ctxs)) == expected
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as ex:
        assert ex.submit(score, "random(0.5)", ["other text"] * 200, None, ctxs).result() == expected


def test_random_depends_on_seed_prompt_and_sample_not_text() -> None:
    base = RewardContext(seed=1, prompt_id="q", sample_index=3)
    f = random_reward(0.5)
    assert f("a", None, base) == f("completely different", "label", base)
    assert _draws("random(0.5)", seed=0) != _draws("random(0.5)", seed=1)


@pytest.mark.parametrize("p", [0.0, 0.001, 0.3, 0.5, 0.7, 1.0])
def test_random_mean(p: float) -> None:
    f = random_reward(p)
    n = 20_000
    mean = (
        sum(f("", None, RewardContext(seed=7, prompt_id=str(i // 8), sample_index=i % 8)) for i in range(n))
        / n
    )
    if p in (0.0, 1.0):
        assert mean == p
    else:
        assert abs(mean - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-4


def test_random_thresholds_nest() -> None:
    lo, hi = _draws("random(0.3)"), _draws("random(0.7)")
    assert all(a <= b for a, b in zip(lo, hi, strict=True))


# ---------------------------------------------------------------------------- spec language


def test_compound_and_not() -> None:
    ctx = RewardContext()
    r = parse_reward("format AND no_python")
    assert r("\\boxed{3}", None, ctx) == 1.0
    assert r("\\boxed{3} in Python", None, ctx) == 0.0
    assert r("3", None, ctx) == 0.0
    g = parse_reward("ground_truth AND no_python")
    assert g.needs_label and not r.needs_label
    assert g("\\boxed{3}", "3", ctx) == 1.0
    assert g("python says \\boxed{3}", "3", ctx) == 0.0
    assert g("\\boxed{4}", "3", ctx) == 0.0
    n = parse_reward("NOT format")
    assert n("\\boxed{}", None, ctx) == 1.0
    assert n("\\boxed{1}", None, ctx) == 0.0
    assert parse_reward("NOT python")("Python", None, ctx) == no_python("Python", None, ctx)
    assert parse_reward("NOT NOT format").spec == "format"
    assert parse_reward("NOT random(1)")("x", None, ctx) == 0.0
    assert parse_reward("NOT ground_truth").needs_label


def test_spec_is_normalised_and_pickles() -> None:
    r = parse_reward("  format   AND  NOT python ")
    assert r.spec == "format AND NOT python"
    assert isinstance(r, Reward)
    assert pickle.loads(pickle.dumps(r)) == r
    assert parse_reward("random( 0.5 )").spec == "random(0.5)"


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("formatt", "formatt"),
        ("format and python", "format and python"),
        ("format AND pyhton", "pyhton"),
        ("random(1.5)", "random(1.5)"),
        ("random(-0.1)", "random(-0.1)"),
        ("random(nan)", "random(nan)"),
        ("random(half)", "random(half)"),
        ("random", "random"),
        ("format AND", "format AND"),
        ("NOT", "NOT"),
        ("", ""),
    ],
)
def test_bad_specs(spec: str, bad: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_reward(spec)
    msg = str(exc.value)
    assert repr(bad) in msg
    for name in ("ground_truth", "format", "no_python", "no_repetition", "random(<p>)"):
        assert name in msg


def test_reward_names() -> None:
    assert set(REWARD_NAMES) == {
        "ground_truth",
        "format",
        "format_authors",
        "python",
        "no_python",
        "no_repetition",
        "random(<p>)",
    }


def test_reward_catches_exceptions() -> None:
    def boom(response: str, label: str | None, ctx: RewardContext) -> float:
        raise RuntimeError("boom")

    r = Reward([rewards._Term("boom", False, boom, 0)])
    before = reward_stats()["failures"]
    assert r("x", None, RewardContext()) == 0.0
    assert Reward([rewards._Term("boom", True, boom, 0)])("x", None, RewardContext()) == 0.0  # NOT too
    assert r.batch(["x", "y"]) == [0.0, 0.0]
    assert r.failures == 3
    assert reward_stats()["failures"] == before + 4


def test_batch_matches_single_calls() -> None:
    responses = [
        "\\boxed{3}",
        "python \\boxed{3}",
        "\\boxed{4}",
        "7",
        "",
        "\\boxed{}",
        "<answer>\\boxed{3}</answer>",
    ]
    labels = ["3", "3", "3", "7", "1", "1", None]
    ctxs = [RewardContext(prompt_id="p", sample_index=i, r1=i == 6) for i in range(len(responses))]
    for spec in (
        "ground_truth",
        "ground_truth AND no_python",
        "format AND NOT python",
        "NOT ground_truth",
        "random(0.5) AND format",
        "no_repetition",
    ):
        r = parse_reward(spec)
        assert r.batch(responses, labels, ctxs) == [
            r(x, y, c) for x, y, c in zip(responses, labels, ctxs, strict=True)
        ]


def test_conversational_completions() -> None:
    msg = [{"role": "assistant", "content": "\\boxed{3} via Python"}]
    assert ground_truth(msg, "3", RewardContext()) == 1.0  # type: ignore[arg-type]
    assert python_reward(msg, None, RewardContext()) == 1.0  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- properties

SPECS = [
    "format",
    "python",
    "no_python",
    "no_repetition",
    "random(0.5)",
    "NOT format",
    "format AND no_python",
]


@pytest.mark.parametrize("spec", SPECS)
@settings(max_examples=200, deadline=timedelta(milliseconds=500))
@given(text=ANY_TEXT, label=st.none() | st.text(ANY_CHAR, max_size=5), r1=st.booleans())
def test_cheap_rewards_are_binary_and_deterministic(
    spec: str, text: str, label: str | None, r1: bool
) -> None:
    r = parse_reward(spec)
    ctx = RewardContext(seed=3, prompt_id=text[:8], sample_index=len(text), r1=r1)
    out = r(text, label, ctx)
    assert out in (0.0, 1.0) and type(out) is float
    assert r(text, label, ctx) == out


@settings(max_examples=40, deadline=timedelta(seconds=8), suppress_health_check=[HealthCheck.too_slow])
@given(text=ANY_TEXT, label=st.sampled_from(["5", "42", "\\frac{1}{2}", "x+1", "", "025"]), r1=st.booleans())
def test_ground_truth_is_binary_and_deterministic(text: str, label: str, r1: bool) -> None:
    r = parse_reward("ground_truth AND no_repetition")
    ctx = RewardContext(r1=r1)
    out = r(text, label, ctx)
    assert out in (0.0, 1.0) and type(out) is float
    assert r(text, label, ctx) == out


# ---------------------------------------------------------------------------- repetition detector


def paper_detect_repetition(
    text: str, min_rep_length: int = 10, max_rep_length: int = 256, min_repeats: int = 10
) -> bool:
    """The authors' quadratic scan, written out plainly (docs/paper-setup.md §5.3)."""
    n = len(text)
    for length in range(min_rep_length, min(max_rep_length, n // 2) + 1):
        for start in range(n - length + 1):
            pattern = text[start : start + length]
            count, pos = 1, start + length
            while text[pos : pos + length] == pattern:
                count += 1
                pos += length
                if count >= min_repeats:
                    return True
    return False


@st.composite
def near_repetitive(draw: st.DrawFn, max_unit: int = 30) -> str:
    """Text with a repeated unit, around the threshold, sometimes with one character changed."""
    alphabet = draw(st.sampled_from(["ab", "abc", "a b\n", "x\x00\ud800"]))
    prefix = draw(st.text(alphabet, max_size=25))
    unit = draw(st.text(alphabet, min_size=draw(st.integers(1, max_unit // 2)), max_size=max_unit))
    k = draw(st.integers(8, 12) | st.integers(0, 13))  # mostly around the threshold of 10
    text = prefix + unit * k + draw(st.text(alphabet, max_size=25))
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(alphabet)) + text[i + 1 :]
    return text


@settings(max_examples=200, deadline=None)
@given(near_repetitive())
def test_repetition_matches_paper_detector(text: str) -> None:
    assert detect_repetition(text) == paper_detect_repetition(text)


@settings(max_examples=200, deadline=None)
@given(near_repetitive(max_unit=8), st.integers(1, 4), st.integers(0, 4), st.integers(3, 5))
def test_repetition_matches_paper_detector_small_params(text: str, lo: int, extra: int, reps: int) -> None:
    args = (lo, lo + extra, reps)
    assert detect_repetition(text, *args) == paper_detect_repetition(text, *args)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abcdefghij" * 10, True),
        ("abcdefghij" * 9 + "abcdefghiX", False),
        ("xy" + "0123456789abc" * 10 + "z", True),
        ("p" * 256 * 10, True),
        ("".join(chr(0x4E00 + i) for i in range(256)) * 10, True),  # L = 256, non-ASCII
        ("".join(chr(0x4E00 + i) for i in range(257)) * 10, False),  # L = 257 is out of range
        ("", False),
    ],
)
def test_repetition_cases(text: str, expected: bool) -> None:
    assert detect_repetition(text) is expected


def test_repetition_is_fast_on_long_text() -> None:
    rng = random.Random(0)
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "for",
        "it",
        "as",
        "with",
        "was",
        "on",
        "be",
        "at",
        "by",
        "this",
        "had",
        "not",
        "are",
    ]
    text = " ".join(rng.choice(words) for _ in range(60_000))  # ~200k characters
    t0 = time.perf_counter()
    assert detect_repetition(text) is False
    assert detect_repetition(text + "loop me now! " * 10) is True
    assert detect_repetition(text + "loop me! " * 12) is False  # period 9 < 10; period 18 needs 20 copies
    assert time.perf_counter() - t0 < 2.0
