"""spurious_rewards.scoring: extraction, cheap paths, worker timeouts, threads, processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spurious_rewards.scoring import (
    counters,
    equivalence,
    extract_answer,
    grade,
    grade_many,
    grading_stats,
    workers,
)

# every code point, NUL and lone surrogates included
ANY_CHAR = st.characters(exclude_categories=())
FRAGMENTS = [
    "\\boxed{",
    "boxed",
    "\\fbox{",
    "{",
    "}",
    "$",
    "<answer>",
    "</answer>",
    "The answer is ",
    "final answer is $",
    "-",
    ".",
    ",",
    "\\frac",
    "^",
    "\n",
    "0",
    "7",
    "42",
    "x",
]
MATHY_TEXT = st.lists(st.sampled_from(FRAGMENTS) | st.text(ANY_CHAR, max_size=4), max_size=30).map("".join)


@pytest.fixture(scope="module", autouse=True)
def warm_worker():
    """Start one worker up front so per-test time bounds measure grading, not sympy imports."""
    assert grade("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2")
    yield


@pytest.fixture(autouse=True)
def cold_cache():
    """Each test grades with an empty verdict cache: a pair another test graded first would be a
    cache hit and skip the counters (``rejected``, ``cheap``, ``sympy``) the test reads."""
    counters.clear_cache()
    yield


def _delta(before: dict, key: str) -> int:
    return grading_stats()[key] - before[key]


# ---------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("nested \\boxed{\\frac{\\sqrt{2}}{\\{2\\}}} end", "\\frac{\\sqrt{2}}{\\{2\\}}"),
        ("\\boxed 5$ and more", "5"),
        ("\\boxed 17. Done", "17"),
        ("\\fbox{3} then \\boxed{4}", "4"),
        ("\\boxed{4} then \\fbox{3}", "3"),
        ("boxed{3}", "3"),
        ("unbalanced \\boxed{\\frac{1", "\\frac{1"),
        ("\\boxed{}", None),
        ("7 is tempting but \\boxed{}", None),  # an empty box does not fall back (Qwen parser)
        ("The final answer is $x^2+1$. I hope it is correct.", "x^2+1"),
        ("Thus the answer is 42. Because reasons", "42"),
        ("The answer is: $\\frac{3}{4}$", "\\frac{3}{4}"),
        ("答案是 12", "12"),
        ("we get 1,000 and then -2,345.5 apples", "-2345.5"),
        ("last number .5", ".5"),
        ("no numbers here", None),
        ("", None),
        ("\\boxed{:5.}", "5"),
    ],
)
def test_extract_answer(response: str, expected: str | None) -> None:
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("<think>\\boxed{3}</think><answer>\\boxed{4}</answer>", "4"),
        ("<think>\\boxed{3}</think><answer>4</answer>", "4"),
        ("<answer>1</answer> <answer>7</answer> 8", "7"),  # a literal cut, not rstrip of characters
        ("<answer>The answer is 5</answer>", "5"),
        ("no tags, so the whole text: \\boxed{9}", "9"),
    ],
)
def test_extract_answer_r1(response: str, expected: str) -> None:
    assert extract_answer(response, r1=True) == expected


def test_extract_answer_r1_ignores_think() -> None:
    text = "<think>\\boxed{3}</think><answer>4</answer>"
    assert extract_answer(text, r1=False) == "3"


@pytest.mark.parametrize(
    "text",
    [
        "\x00\\boxed{\x00}\x00",
        "\ud800\\boxed{\udfff1}",
        "{" * 100_000 + "\\boxed{" + "{" * 100_000,
        "}" * 100_000 + "boxed",
        "1" * 1_000_000,
        "-." * 500_000,
        "The answer is " * 100_000,
        "\\boxed{" + "x" * 1_000_000,
        "9," * 500_000,
    ],
)
def test_extract_answer_total_and_fast(text: str) -> None:
    t0 = time.perf_counter()
    for r1 in (False, True):
        out = extract_answer(text, r1=r1)
        assert out is None or isinstance(out, str)
    assert time.perf_counter() - t0 < 2.0


@settings(max_examples=200, deadline=timedelta(milliseconds=500))
@given(st.text(ANY_CHAR) | MATHY_TEXT, st.booleans())
def test_extract_answer_never_raises(text: str, r1: bool) -> None:
    out = extract_answer(text, r1=r1)
    assert out is None or (isinstance(out, str) and out)
    assert extract_answer(text, r1=r1) == out


# ---------------------------------------------------------------------------- cheap path


@pytest.mark.parametrize(
    ("pred", "label", "expected"),
    [
        ("025", "25", True),  # AIME labels are zero-padded
        ("25", "025", True),
        ("142", "142.0", True),  # AMC labels are floats
        ("142.00", "142", True),
        ("3.", "3", True),
        ("\\text{5}", "5", True),
        ("$5$", "5", True),
        ("\\frac12", "0.5", True),
        ("\\dfrac{1}{2}", "1/2", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("x + 1", "x+1", True),
        ("24", "25", False),
        ("\\frac{1}{3}", "\\frac{1}{2}", False),
        ("-25", "25", False),
    ],
)
def test_cheap_cases_skip_sympy(pred: str, label: str, expected: bool) -> None:
    before = grading_stats()
    assert grade(pred, label) is expected
    assert _delta(before, "sympy") == 0


def test_cheap_path_starts_nothing() -> None:
    # a fresh interpreter: importing and grading easy cases must not load sympy or start workers
    code = (
        "import sys; from spurious_rewards import scoring as grading\nfrom spurious_rewards.scoring import rewards\n"
        "assert grading.grade('025', '25') and grading.grade('142', '142.0')\n"
        "assert rewards.parse_reward('ground_truth AND format')('\\\\boxed{7}', '7') == 1.0\n"
        "assert grading.grading_stats()['workers_started'] == 0\n"
        "assert 'sympy' not in sys.modules and 'math_verify' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(("pred", "label"), [(None, "5"), ("5", ""), ("", "5"), ("  ", "5"), ("5", "   ")])
def test_empty_or_missing_is_false(pred: str | None, label: str) -> None:
    assert grade(pred, label) is False


def test_non_string_inputs() -> None:
    assert grade(5, 5.0) is True  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- math-verify


@pytest.mark.parametrize(
    ("pred", "label", "expected"),
    [
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("\\sqrt{12}", "2\\sqrt{3}", True),
        ("10\\%", "10", True),
        ("0.333333", "\\frac{1}{3}", True),
        ("(1, 2)", "(1,2)", True),
        ("\\boxed{\\frac12}", "0.5", True),
        ("\\pi", "3.14159", False),
        ("x^2+2x+2", "(x+1)^2", False),
        ("1.0000001", "1", False),
    ],
)
def test_math_verify_cases(pred: str, label: str, expected: bool) -> None:
    assert grade(pred, label) is expected


def test_cache_hits() -> None:
    grade("\\sqrt{8}", "2\\sqrt{2}")
    before = grading_stats()
    assert grade("\\sqrt{8}", "2\\sqrt{2}") is True
    assert _delta(before, "cache_hits") == 1
    assert _delta(before, "sympy") == 0


def test_grade_from_non_main_thread() -> None:
    out: list[bool] = []
    cases = [
        ("\\boxed{\\frac12}", "0.5"),
        ("\\frac{\\sqrt{3}}{3}", "1/\\sqrt{3}"),
        ("\\sqrt{18}", "3\\sqrt{2}"),
    ]
    t = threading.Thread(target=lambda: out.extend(grade(p, g) for p, g in cases))
    t.start()
    t.join(30)
    assert out == [True, True, True]


def test_grade_from_many_threads() -> None:
    pairs = [(f"\\frac{{\\sqrt{{{k * k * 2}}}}}{{{k}}}", "\\sqrt{2}") for k in range(1, 25)]
    pairs += [(f"\\sqrt{{{k * k * 3}}}", f"{k + 1}\\sqrt{{3}}") for k in range(1, 9)]
    expected = [True] * 24 + [False] * 8
    with ThreadPoolExecutor(8) as ex:
        assert list(ex.map(lambda pg: grade(*pg), pairs)) == expected


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_grade_inside_daemonic_worker_process(method: str) -> None:
    # multiprocessing.Pool workers are daemonic: they may not use multiprocessing children,
    # but the graders are plain subprocesses. A forked child must not reuse our workers.
    with mp.get_context(method).Pool(1) as pool:
        assert pool.apply(grade, ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2")) is True
        assert pool.apply(grade_many, ([("\\sqrt{4}", "2"), ("\\sqrt{5}", "2")],)) == [True, False]
    assert grade("\\sqrt{27}", "3\\sqrt{3}") is True  # ours still work afterwards


def test_pathological_prediction_times_out() -> None:
    # sympy expands this polynomial for well over a minute; math-verify's own timeout could not
    # interrupt it from a thread. The worker is killed at the deadline and replaced.
    before = grading_stats()
    t0 = time.perf_counter()
    assert grade("(x+y+z+1)^{60}", "5", timeout=1.0) is False
    assert time.perf_counter() - t0 < 1.0 + 2.0
    assert _delta(before, "timeouts") == 1
    assert grading_stats()["forced_false"] > 0
    assert grade("\\sqrt{50}", "5\\sqrt{2}") is True  # a fresh worker takes over


def test_pathological_prediction_times_out_in_thread() -> None:
    out: list[bool] = []
    t0 = time.perf_counter()
    t = threading.Thread(target=lambda: out.append(grade("(x+y+1)^{250}", "7", timeout=1.0)))
    t.start()
    t.join(10)
    assert out == [False]
    assert time.perf_counter() - t0 < 3.0


def test_worker_killed_while_idle_is_replaced_without_blame() -> None:
    grade("\\sqrt{20}", "2\\sqrt{5}")
    for w in list(workers._get_pool().idle):
        os.kill(w.proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    before = grading_stats()
    assert grade("\\sqrt{28}", "2\\sqrt{7}") is True
    assert grade_many([("\\sqrt{44}", "2\\sqrt{11}"), ("\\sqrt{45}", "2\\sqrt{11}")], workers=1) == [
        True,
        False,
    ]
    assert _delta(before, "crashes") == 0


def test_worker_crash_mid_item_scores_zero() -> None:
    out: list[bool] = []
    t = threading.Thread(target=lambda: out.append(grade("(x+y+z+3)^{60}", "5", timeout=30.0)))
    before = grading_stats()
    t0 = time.perf_counter()
    t.start()
    time.sleep(1.0)
    for w in list(workers._get_pool().all):  # the busy worker dies (as under the OOM killer)
        if w not in workers._get_pool().idle:
            os.kill(w.proc.pid, signal.SIGKILL)
    t.join(10)
    assert out == [False]
    assert time.perf_counter() - t0 < 5.0
    assert _delta(before, "crashes") == 1
    assert grade("\\sqrt{52}", "2\\sqrt{13}") is True


@pytest.mark.parametrize("timeout", [float("nan"), 0.0, -1.0, float("inf")])
def test_silly_timeouts_still_grade(timeout: float) -> None:
    assert grade("\\sqrt{63}", "3\\sqrt{7}", timeout=timeout) is True


@pytest.mark.parametrize(
    "pred",
    [
        "10^{10^{10}}",
        "9^{9^{9}}",
        "2^2^2^2^2",
        "10**10**10",
        "x^{1000000}",
        "(9^{9})!",
        "123456!",
        "(" * 40 + "1" + ")" * 40,
        "1+" * 600 + "1",
        "5\x00",
        "\ud8005",
    ],
)
def test_absurd_predictions_are_rejected_cheaply(pred: str) -> None:
    before = grading_stats()
    t0 = time.perf_counter()
    assert grade(pred, "5") is False
    assert time.perf_counter() - t0 < 0.5
    assert _delta(before, "rejected") == 1
    assert _delta(before, "sympy") == 0


def test_grade_many_matches_grade_and_keeps_order() -> None:
    pairs: list[tuple[str | None, str]] = [
        ("025", "25"),
        (None, "3"),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
        ("x^2+2x+2", "(x+1)^2"),
        ("10^{10^{10}}", "5"),
        ("7", ""),
        ("\\sqrt{12}", "2\\sqrt{3}"),
        ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),  # a duplicate
    ] * 5
    expected = [grade(p, g) for p, g in pairs]
    assert expected[:8] == [True, False, True, False, False, False, True, True]
    assert grade_many(pairs, workers=2) == expected
    assert grade_many(pairs, workers=1) == expected
    assert grade_many(list(reversed(pairs)), workers=2) == list(reversed(expected))


def test_grade_many_fresh_pairs_are_deterministic() -> None:
    pairs = [(f"\\frac{{{k}\\sqrt{{2}}}}{{2}}", f"\\frac{{{k}}}{{\\sqrt{{2}}}}") for k in range(1, 40)]
    pairs += [(f"{k}\\sqrt{{3}}", f"\\sqrt{{{3 * k * k + 1}}}") for k in range(1, 40)]
    counters.clear_cache()
    first = grade_many(pairs, workers=2)
    counters.clear_cache()
    second = grade_many(pairs, workers=2)
    assert first == second == [True] * 39 + [False] * 39


def test_grade_many_with_a_timeout_in_the_batch() -> None:
    pairs = [("\\sqrt{8}", "2\\sqrt{2}"), ("(x+y+z+2)^{60}", "5"), ("\\sqrt{75}", "5\\sqrt{3}")]
    before = grading_stats()
    t0 = time.perf_counter()
    assert grade_many(pairs, workers=1, timeout=1.0) == [True, False, True]
    assert time.perf_counter() - t0 < 1.0 + 4.0
    assert _delta(before, "timeouts") == 1


def test_grade_many_empty() -> None:
    assert grade_many([]) == []


def test_stats_shape() -> None:
    stats = grading_stats()
    for key in (
        "calls",
        "cheap",
        "rejected",
        "sympy",
        "timeouts",
        "errors",
        "crashes",
        "failures",
        "forced_false",
        "cache_hits",
    ):
        assert isinstance(stats[key], int)


@settings(max_examples=40, deadline=timedelta(seconds=8), suppress_health_check=[HealthCheck.too_slow])
@given(MATHY_TEXT | st.text(ANY_CHAR, max_size=50), st.sampled_from(["5", "\\frac{1}{2}", "x+1", "(1,2)"]))
def test_grade_total_on_arbitrary_text(pred: str, label: str) -> None:
    out = grade(pred, label)
    assert out is True or out is False
    assert grade(pred, label) is out


@st.composite
def number_forms(draw: st.DrawFn) -> str:
    """An integer, zero-padded integer, decimal, fraction or slash form of a small rational."""
    num = draw(st.integers(-30, 30))
    den = draw(st.integers(1, 12))
    form = draw(st.sampled_from(["int", "pad", "float", "frac", "dfrac", "slash", "dec"]))
    if form == "int":
        return str(num)
    if form == "pad":
        return f"{abs(num):03d}"
    if form == "float":
        return f"{num}.0"
    if form == "dec":
        return f"{num / den:.{draw(st.integers(1, 7))}f}"
    if form == "slash":
        return f"{num}/{den}"
    return f"\\{'d' if form == 'dfrac' else ''}frac{{{num}}}{{{den}}}"


@settings(max_examples=60, deadline=timedelta(seconds=8), suppress_health_check=[HealthCheck.too_slow])
@given(number_forms(), number_forms())
def test_cheap_verdicts_agree_with_math_verify(pred: str, label: str) -> None:
    cheap = equivalence._cheap_verdict(pred, label)
    if cheap is not None:
        (code,) = workers.worker_outcomes([(pred, label)], 5.0, 1)  # math-verify, no shortcut
        assert code in ("0", "1")
        assert cheap == (code == "1"), (pred, label)
