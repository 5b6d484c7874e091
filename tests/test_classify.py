"""spurious_rewards.analysis.classify: code test, per-problem tables, transitions and partial contribution scores."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spurious_rewards import io
from spurious_rewards.analysis import classify
from spurious_rewards.scoring import style

# A crafted benchmark of 10 problems (docs/paper-setup.md §5.2), hand-computed:
#   groups   CC: p0 p1 | CL: p2 p3 | LC: p4 p5 p6 | LL: p7 p8 p9
#   Δcorrect CC: 0+1=1 | CL: -1+1=0 | LC: 1+1+0=2 | LL: 0+1+0=1   total 4 (accuracy 0.3 -> 0.7)
#   C_d      0.25      | 0          | 0.5          | 0.25
CODE_0 = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
CODE_T = [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
CORRECT_0 = [1, 0, 1, 0, 0, 0, 0, 1, 0, 0]
CORRECT_T = [1, 1, 0, 1, 1, 1, 0, 1, 1, 0]


def test_is_code_is_the_papers_substring_test() -> None:
    assert style.is_code("```Python\nprint(1)\n```")
    assert style.is_code("I will use PYTHON")
    assert not style.is_code("We add 2 and 3 to get 5.")


def test_transitions_hand_computed() -> None:
    t = classify.transitions(np.array(CODE_0), np.array(CORRECT_0), np.array(CODE_T), np.array(CORRECT_T))
    assert list(t["group"]) == list(classify.GROUPS) == ["Code→Code", "Code→Lang", "Lang→Code", "Lang→Lang"]
    assert list(t["n"]) == [2, 2, 3, 3]
    assert t["share"].tolist() == pytest.approx([0.2, 0.2, 0.3, 0.3])
    assert t["acc_before"].tolist() == pytest.approx([0.5, 0.5, 0.0, 1 / 3])
    assert t["acc_after"].tolist() == pytest.approx([1.0, 0.5, 2 / 3, 2 / 3])
    assert t["delta"].tolist() == pytest.approx([1, 0, 2, 1])
    assert t["contribution"].tolist() == pytest.approx([0.25, 0.0, 0.5, 0.25])
    # the groups' pp shares add up to the benchmark's gain (0.3 -> 0.7 = +40 pp)
    assert t["delta_pp"].tolist() == pytest.approx([10, 0, 20, 10])
    assert t["delta_pp"].sum() == pytest.approx(40)
    assert t["contribution"].sum() == pytest.approx(1.0)


def test_contribution_is_nan_when_total_gain_is_zero() -> None:
    t = classify.transitions(np.array([1, 0]), np.array([1, 0]), np.array([0, 0]), np.array([0, 1]))
    assert t["delta"].sum() == 0
    assert t["contribution"].isna().all()
    # empty groups have no accuracy, but are still listed
    assert t.loc[t["group"] == "Lang→Code", "n"].item() == 0
    assert math.isnan(t.loc[t["group"] == "Lang→Code", "acc_before"].item())


def test_negative_total_gain_keeps_signs_meaningful() -> None:
    # a group that lost more than the total loss gets C_d > 1, one that gained gets C_d < 0
    t = classify.transitions(np.array([1, 1, 0]), np.array([1, 1, 0]), np.array([1, 1, 0]), np.array([0, 0, 1]))
    assert t["delta"].sum() == -1
    assert t.loc[t["group"] == "Code→Code", "contribution"].item() == pytest.approx(2.0)
    assert t.loc[t["group"] == "Lang→Lang", "contribution"].item() == pytest.approx(-1.0)


def _rows(code: list[int], correct: list[int], *, k: int = 1, ids: list[str] | None = None) -> list[dict]:
    ids = ids or [f"p{j}" for j in range(len(code))]
    return [
        {"id": pid, "i": i, "response": "print in python" if c else "words", "pred": "1",
         "correct": bool(ok) if i == 0 else not ok, "code": bool(c), "repetition": False, "tokens": 3}
        for pid, c, ok in zip(ids, code, correct, strict=True) for i in range(k)
    ]


def test_transitions_between_aligns_problems_by_id(tmp_path: Path) -> None:
    base = _rows(CODE_0, CORRECT_0)
    ckpt = _rows(CODE_T, CORRECT_T)[::-1] + _rows([1], [1], ids=["extra"])  # other order, one extra problem
    io.write_jsonl(base, tmp_path / "step0_b.jsonl.gz")
    io.write_jsonl(ckpt, tmp_path / "step20_b.jsonl.gz")
    t = classify.transitions_from_files(tmp_path / "step0_b.jsonl.gz", tmp_path / "step20_b.jsonl.gz")
    assert t["n"].sum() == 10
    assert t["contribution"].tolist() == pytest.approx([0.25, 0.0, 0.5, 0.25])


def test_problem_table_counts_and_first_sample(tmp_path: Path) -> None:
    rows = _rows([1, 0, 1], [1, 0, 0], k=4)  # samples 1..3 flip correctness
    path = tmp_path / "s.jsonl.gz"
    io.write_jsonl(rows, path)
    t = classify.read_problems(path)
    assert list(t.index) == ["p0", "p1", "p2"]
    assert t["samples"].tolist() == [4, 4, 4]
    assert t["correct"].tolist() == [1, 3, 3]
    assert t["correct0"].tolist() == [1.0, 0.0, 0.0]
    assert t["code"].tolist() == [4, 0, 4]
    assert t["correct_code"].tolist() == [1, 0, 3]
    assert t["tokens"].tolist() == [12, 12, 12]
    r = classify.sample_rates(t)
    assert r["accuracy"] == pytest.approx(7 / 12)
    assert r["code_frequency"] == pytest.approx(8 / 12)
    assert r["accuracy_code"] == pytest.approx(4 / 8)
    assert r["accuracy_language"] == pytest.approx(3 / 4)
    assert r["accuracy_first"] == pytest.approx(1 / 3)
    assert r["code_frequency_first"] == pytest.approx(2 / 3)
    assert r["mean_length"] == pytest.approx(3.0)


def test_flags_in_the_file_are_trusted_and_missing_ones_computed() -> None:
    rows = [
        # flagged: the text says python but the evaluation said no; the flag wins (no re-classification)
        {"id": "a", "i": 0, "response": "python", "correct": True, "code": False, "repetition": False},
        # unflagged: classified from the text
        {"id": "b", "i": 0, "response": "Python code " + "abcdefghij" * 12, "correct": False},
    ]
    t = classify.problem_table(rows)
    assert t.loc["a", "code"] == 0
    assert t.loc["b", "code"] == 1
    assert t.loc["b", "repetition"] == 1  # 12 back-to-back copies of a 10-character pattern
    assert t.loc["a", "tokens"] == 0


def test_problem_table_is_empty_for_no_rows() -> None:
    t = classify.problem_table([])
    assert list(t.columns) == list(classify.PROBLEM_COLUMNS) and t.empty
    assert isinstance(t, pd.DataFrame)


def test_read_problems_locates_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "i": 0, "response": "", "correct": true}\n{"id": "b", "i": 0, oops}\n')
    with pytest.raises(io.DataError, match=r"bad\.jsonl:2: invalid JSON"):
        classify.read_problems(path)
