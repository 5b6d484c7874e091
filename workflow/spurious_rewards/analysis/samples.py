"""Readers of the jobs' outputs: evaluation summaries, training metrics and sample folders.

Why a fast path (:func:`read_problems`, :func:`read_accuracy`, :func:`read_final`): at paper
scale (tens of millions of sample rows in tens of thousands of gzip files) reading the rows
is most of the aggregation's time. A sample file's small columns come from its column index
where the evaluation wrote one (:mod:`..samplefile`; no text is read), else from one C-level
parse of the file, and are folded column-wise with numpy into the numbers of
:func:`.classify.problem_table` (the same numbers; any surprise falls back to the row-by-row
fold).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io, samplefile
from . import classify

_SAMPLE_FILE = re.compile(r"step(\d+)_(.+)\.jsonl\.gz")


def _accuracy_columns(rows: list) -> tuple[list, list] | None:
    """(ids, correct) of rows, or None where :func:`accuracy` of the row-by-row fold must decide.

    Only the two columns an accuracy reads, with their types checked: a row whose other
    fields the full fast path would refuse (absent flags, odd token counts) gives the
    fallback's accuracy all the same, because the fold counts ``correct`` per ``id`` and
    nothing else.
    """
    try:
        ids = list(map(itemgetter("id"), rows))
        correct = list(map(itemgetter("correct"), rows))
    except (KeyError, TypeError):
        return None
    if not rows or set(map(type, ids)) != {str} or not set(map(type, correct)) <= {bool}:
        return None
    return ids, correct


def _positions_of(ids: list, positions: dict[str, int]) -> np.ndarray:
    """Each id's place in ``positions`` (-1 where absent), looked up by a C-level ``map``."""
    return np.fromiter(map(positions.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))


def _mean_per(where: np.ndarray, correct: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``correct`` per place ``where`` (rows at -1 dropped) over ``n`` places; NaN where a place has none."""
    keep = where >= 0
    samples_n = np.bincount(where[keep], minlength=n).astype(float)
    right = np.bincount(where[keep], weights=correct[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = right / samples_n
    out[samples_n == 0] = math.nan
    return out


def read_accuracy(path: Path, positions: dict[str, int]) -> np.ndarray:
    """``accuracy(read_problems(path), ids)`` without building the per-problem table (same numbers).

    ``positions`` maps each wanted problem id to its place in the result (the base
    model's problems, in order); problems the file lacks are NaN, ones it has beyond
    them are ignored. Why: at paper scale the aggregation needs only the per-problem
    accuracy of every checkpoint but the last (~14 of every 15 sample files), and
    building a pandas table (and its string index) per file cost more than parsing the
    file. The column index answers where fresh (:mod:`..samplefile`); anything the fast
    path would not take goes through :func:`read_problems` and :func:`accuracy`.
    """
    cols, rows = samplefile.read_columns(path)
    if cols is not None:
        return _mean_per(_positions_of(cols.ids, positions)[cols.codes], cols.correct, len(positions))
    two = _accuracy_columns(rows) if rows is not None else None
    if two is None:
        return accuracy(read_problems(path), pd.Index(list(positions), name="id"))
    ids, correct = two
    return _mean_per(_positions_of(ids, positions), np.array(correct, dtype=bool), len(positions))


def read_final(path: Path, base: pd.DataFrame, positions: dict[str, int] | None = None,
               before: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """``(accuracy(t, base.index), classify.transitions_between(base, t))`` of ``t = read_problems(path)``.

    The same numbers without the per-problem table: the aggregation reads each run's
    final checkpoint only for its accuracies and the first samples' Code/Lang flags,
    and building (then reindexing) a pandas table per file was a tenth of its CPU.
    ``positions`` is ``{id: place}`` of ``base.index`` and ``before`` its
    ``[["code0", "correct0"]]`` as floats (both built here if not given: a caller
    reading many runs against one base builds them once).
    Anything the fast path would not take goes through :func:`read_problems`.
    """
    cols, _rows = samplefile.read_columns(path)
    if cols is None:
        table = read_problems(path)
        return accuracy(table, base.index), classify.transitions_between(base, table)
    if positions is None:
        positions = {pid: i for i, pid in enumerate(base.index)}
    n = len(positions)
    where = _positions_of(cols.ids, positions)[cols.codes]
    acc = _mean_per(where, cols.correct, n)
    # each problem's last i == 0 row (as problem_table_of folds it), aligned to the base problems
    after = np.full((n, 2), math.nan)
    sel = np.flatnonzero((cols.i == 0) & (where >= 0))[::-1]
    probs, at = np.unique(where[sel], return_index=True)
    after[probs, 0], after[probs, 1] = cols.code[sel[at]], cols.correct[sel[at]]
    if before is None:
        before = base_flags(base)
    ok = ~(np.isnan(before).any(axis=1) | np.isnan(after).any(axis=1))
    return acc, classify.transitions(before[ok, 0], before[ok, 1], after[ok, 0], after[ok, 1])


def base_flags(base: pd.DataFrame) -> np.ndarray:
    """A base per-problem table's first-sample (Code, correct) flags as floats, NaN where unknown (for :func:`read_final`)."""
    return base[["code0", "correct0"]].to_numpy(dtype=float)


def read_problems(path: Path) -> pd.DataFrame:
    """:func:`classify.read_problems` of one sample file, from its columns instead of line by line.

    Why: at paper scale (13.5M rows in ~31k files) per-line ``json.loads`` and the
    line iterator are most of the aggregation's CPU time. The column index answers
    where fresh, else the file is parsed in one C call (:func:`samplefile.read_columns`);
    any surprise (bad gzip, bad UTF-8, bad JSON, rows without flags) falls back to
    :func:`classify.read_problems`, which gives the same table or raises the same
    :class:`io.DataError` naming the line.
    """
    cols, rows = samplefile.read_columns(path)
    if cols is not None:
        return problem_table_of(cols)
    return classify.read_problems(path) if rows is None else classify.problem_table(rows)


def problem_table_of(cols: samplefile.Columns) -> pd.DataFrame:
    """:func:`classify.problem_table` of a sample file's :class:`~..samplefile.Columns` (the same table)."""
    codes, n = cols.codes, len(cols.ids)
    c, k = cols.correct, cols.code
    values = np.empty((n, len(classify.PROBLEM_COLUMNS)), dtype=float)
    values[:, 0] = np.bincount(codes, minlength=n)
    values[:, 1] = np.bincount(codes, weights=c, minlength=n)
    values[:, 2] = np.bincount(codes, weights=k, minlength=n)
    values[:, 3] = np.bincount(codes, weights=c & k, minlength=n)
    values[:, 4] = np.bincount(codes, weights=cols.repetition, minlength=n)
    values[:, 5] = np.bincount(codes, weights=cols.tokens, minlength=n)
    values[:, 6:] = math.nan
    sel = np.flatnonzero(cols.i == 0)
    if len(sel):  # the last i == 0 row of a problem wins, as in the row-by-row fold
        rev = sel[::-1]
        probs, where = np.unique(codes[rev], return_index=True)
        last = rev[where]
        values[probs, 6] = c[last]
        values[probs, 7] = k[last]
    return pd.DataFrame(values, index=pd.Index(cols.ids, name="id"), columns=list(classify.PROBLEM_COLUMNS))


def read_sample_dir(
    sample_dir: str | os.PathLike[str], benchmarks: Iterable[str] | None = None
) -> dict[tuple[int, str], pd.DataFrame]:
    """Per-problem tables (classify.problem_table) of every ``step{N}_{benchmark}.jsonl.gz`` in a folder."""
    return {key: read_problems(f) for key, f in sample_files(sample_dir, benchmarks).items()}


def sample_files(
    sample_dir: str | os.PathLike[str], benchmarks: Iterable[str] | None = None
) -> dict[tuple[int, str], Path]:
    """Every ``step{N}_{benchmark}.jsonl.gz`` of a folder by (step, benchmark), in file-name order."""
    wanted = None if benchmarks is None else set(benchmarks)
    out: dict[tuple[int, str], Path] = {}
    d = Path(sample_dir)
    if not d.is_dir():
        return out
    for f in sorted(d.iterdir()):
        m = _SAMPLE_FILE.fullmatch(f.name)
        if m and (wanted is None or m[2] in wanted):
            out[(int(m[1]), m[2])] = f
    return out


def read_eval_summary(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The ``results`` rows of one evaluation summary.json (step, benchmark, metric columns)."""
    doc = io.read_json(path)
    rows = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise io.DataError(path, "expected a list of result rows", field="results")
    df = pd.DataFrame(rows)
    for col in ("step", "benchmark"):
        if len(df) and col not in df:
            raise io.DataError(path, "missing in a result row", field=col)
    return df if len(df) else pd.DataFrame(columns=["step", "benchmark"])


def read_train_metrics(path: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per rollout step of a run's metrics.jsonl (step 0 = before training)."""
    df = pd.DataFrame(io.read_jsonl(path))
    if len(df) and "step" not in df:
        raise io.DataError(path, "missing in a metrics row", field="step")
    return df if len(df) else pd.DataFrame(columns=["step"])


def accuracy(table: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """Per-problem accuracy (mean over its samples) in the order of ``ids``; NaN where a problem is missing."""
    t = table.reindex(ids)
    return (t["correct"] / t["samples"]).to_numpy(dtype=float)
