"""Reasoning-strategy classification of responses (never executed, only read).

Besides the paper's code test (:func:`is_code`) this module holds the
per-problem view of an evaluation's sample file and the step-0 -> step-t
*transitions* of docs/paper-setup.md §5.2 (Fig. 7, Table 2): each problem's first
response (``i == 0``; greedy on a T=0 benchmark) is labelled Code or Lang
before and after training, giving four disjoint groups whose accuracy change
and *partial contribution score*

    C_d = sum_{x in d} (1[correct_t(x)] - 1[correct_0(x)]) / sum_{x in D} (same)

say where a reward's gain comes from. Why a per-problem table rather than the
raw rows: one pass over a (possibly multi-GB) gzipped sample file leaves a few
integers per problem, which is all the transitions, the style rates and the
bootstrap over problems need, so memory is bounded by the number of problems,
not responses. The evaluation already wrote ``code``/``repetition`` flags into
every row; they are trusted and the text is only re-read when a flag is absent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from ..scoring.style import detect_repetition, is_code

__all__ = [
    "GROUPS",
    "PROBLEM_COLUMNS",
    "is_code",
    "is_repetition",
    "problem_table",
    "read_problems",
    "sample_rates",
    "transition_groups",
    "transitions",
    "transitions_between",
    "transitions_from_files",
]

# The paper's four transition groups, in Fig. 7's order (before -> after).
GROUPS: tuple[str, ...] = ("Code→Code", "Code→Lang", "Lang→Code", "Lang→Lang")

# Per-problem counts kept from a sample file (see read_problems).
PROBLEM_COLUMNS: tuple[str, ...] = (
    "samples", "correct", "code", "correct_code", "repetition", "tokens", "correct0", "code0",
)


def is_repetition(response: str) -> bool:
    """The authors' repetition detector (lazy import: only needed for rows written without the flag)."""
    return detect_repetition(response)


def problem_table(rows: Iterable[dict]) -> pd.DataFrame:
    """Fold sample rows into one row per problem (in first-seen order), in one streaming pass.

    Columns (all float): ``samples`` (k), ``correct``/``code``/``correct_code``/
    ``repetition`` (counts over the k samples), ``tokens`` (sum), and ``correct0``/
    ``code0``: the first sample's flags (``i == 0``; NaN when a problem has no such sample).
    """
    acc: dict[str, list] = {}
    nan = math.nan
    for row in rows:
        pid = row["id"]
        a = acc.get(pid)
        if a is None:
            a = acc[pid] = [0, 0, 0, 0, 0, 0, nan, nan]
        c = bool(row["correct"])
        k = row.get("code")
        if k is None:
            k = is_code(row["response"])
        r = row.get("repetition")
        if r is None:
            r = is_repetition(row["response"])
        a[0] += 1
        a[1] += c
        a[2] += bool(k)
        a[3] += c and bool(k)
        a[4] += bool(r)
        a[5] += row.get("tokens") or 0
        if row.get("i", 0) == 0:
            a[6] = float(c)
            a[7] = float(bool(k))
    # one float block (counts are exact in float64): half the construction cost of mixed dtypes
    values = np.array(list(acc.values()), dtype=float).reshape(len(acc), len(PROBLEM_COLUMNS))
    return pd.DataFrame(values, index=pd.Index(list(acc), name="id"), columns=list(PROBLEM_COLUMNS))


def read_problems(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Stream one ``samples/step{N}_{benchmark}.jsonl.gz`` file into its per-problem table."""
    return problem_table(io.iter_jsonl(Path(path)))


def sample_rates(table: pd.DataFrame) -> dict[str, float]:
    """Style and repetition rates of a per-problem table (the paper's Table 1 columns, and more).

    Rates are over all samples; ``*_first`` ones use only the first (greedy) sample.
    """
    tot = table[["samples", "correct", "code", "correct_code", "repetition", "tokens"]].sum()
    n, n_code = tot["samples"], tot["code"]

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else math.nan

    return {
        "problems": float(len(table)),
        "samples": float(n),
        "accuracy": ratio(tot["correct"], n),
        "code_frequency": ratio(n_code, n),
        "repetition_rate": ratio(tot["repetition"], n),
        "mean_length": ratio(tot["tokens"], n),
        "accuracy_code": ratio(tot["correct_code"], n_code),
        "accuracy_language": ratio(tot["correct"] - tot["correct_code"], n - n_code),
        "accuracy_first": float(table["correct0"].mean()),
        "code_frequency_first": float(table["code0"].mean()),
    }


def transition_groups(code_before: np.ndarray, code_after: np.ndarray) -> np.ndarray:
    """Index into :data:`GROUPS` for each problem (0 = Code→Code ... 3 = Lang→Lang)."""
    before = np.asarray(code_before, dtype=bool)
    after = np.asarray(code_after, dtype=bool)
    return 2 * (~before) + (~after)


def transitions(
    code_before: np.ndarray, correct_before: np.ndarray, code_after: np.ndarray, correct_after: np.ndarray
) -> pd.DataFrame:
    """The four transition groups of aligned problems, with the partial contribution score.

    One row per group (all four, empty ones included): ``n``, ``share`` of the
    problems, ``acc_before``/``acc_after`` within the group, ``delta`` = Σ(correct_t −
    correct_0) over the group (in problems), ``delta_pp`` = the group's share of the
    benchmark's accuracy change (percentage points; they sum to the total gain), and
    ``contribution`` = C_d = delta / total delta (NaN when the total change is 0,
    where the score is undefined).
    """
    groups = transition_groups(code_before, code_after)
    c0 = np.asarray(correct_before, dtype=float)
    c1 = np.asarray(correct_after, dtype=float)
    n_all = len(groups)
    n = np.bincount(groups, minlength=4).astype(float)
    s0 = np.bincount(groups, weights=c0, minlength=4)
    s1 = np.bincount(groups, weights=c1, minlength=4)
    delta = s1 - s0
    total = delta.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame(
            {
                "group": GROUPS,
                "n": n.astype(int),
                "share": n / n_all if n_all else np.full(4, math.nan),
                "acc_before": np.where(n > 0, s0 / n, math.nan),
                "acc_after": np.where(n > 0, s1 / n, math.nan),
                "delta": delta,
                "delta_pp": 100 * delta / n_all if n_all else np.full(4, math.nan),
                "contribution": delta / total if total != 0 else np.full(4, math.nan),
            }
        )
    return out


def transitions_between(base: pd.DataFrame, ckpt: pd.DataFrame) -> pd.DataFrame:
    """Transitions between two per-problem tables (base, checkpoint) on the problems both have."""
    cols = ["code0", "correct0"]
    before = base[cols].to_numpy(dtype=float)
    after = ckpt[cols].reindex(base.index).to_numpy(dtype=float)  # a join on id, without a merge's overhead
    ok = ~(np.isnan(before).any(axis=1) | np.isnan(after).any(axis=1))
    return transitions(before[ok, 0], before[ok, 1], after[ok, 0], after[ok, 1])


def transitions_from_files(base_path: str | os.PathLike[str], ckpt_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Transitions between the base model's and a checkpoint's sample files of one benchmark."""
    return transitions_between(read_problems(base_path), read_problems(ckpt_path))
