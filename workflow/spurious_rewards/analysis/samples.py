"""Readers of the jobs' outputs: evaluation summaries, training metrics and sample folders.

Why a fast path (:func:`read_problems`): at paper scale (tens of millions of sample rows in
tens of thousands of gzip files) per-line ``json.loads`` and the line iterator are most of
the aggregation's CPU time, so a file is decompressed and parsed in one C call, and folded
column-wise with numpy into the per-problem table of :func:`.classify.problem_table`
(the same table; any surprise falls back to the row-by-row fold).
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from .. import io
from . import classify

_SAMPLE_FILE = re.compile(r"step(\d+)_(.+)\.jsonl\.gz")


_GZIP_MAGIC = b"\x1f\x8b"


def _parse(path: Path) -> list | None:
    """The rows of one sample file parsed in one C call, or None where :func:`read_problems` must fall back."""
    try:
        data = path.read_bytes()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
        data.decode("utf-8")  # the fallback reports bad bytes with their line
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        rows = json.loads(b"[" + b",".join(lines) + b"]")
        if len(rows) != len(lines):  # e.g. a line "{...},{...}": invalid JSONL, valid inside an array
            raise ValueError("line/value count mismatch")
    except (OSError, EOFError, ValueError, zlib.error):
        return None
    return rows


def _accuracy_columns(rows: list) -> tuple[list, list] | None:
    """(ids, correct) of rows, or None where :func:`accuracy` of the row-by-row fold must decide.

    Only the two columns an accuracy reads, with their types checked: a row whose other
    fields the full fast path would refuse (absent flags, odd token counts) gives the
    fallback's accuracy all the same, because the fold counts ``correct`` per ``id`` and
    nothing else. Extracted by C-level ``map``s: the checkpoints before the last are
    ~14 of every 15 sample files (:func:`read_accuracy`), and the six-column extraction
    was a fifth of reading one.
    """
    try:
        ids = list(map(itemgetter("id"), rows))
        correct = list(map(itemgetter("correct"), rows))
    except (KeyError, TypeError):
        return None
    if not rows or set(map(type, ids)) != {str} or not set(map(type, correct)) <= {bool}:
        return None
    return ids, correct


def _fast_columns(rows: list) -> tuple[list, list, list, list, list, list] | None:
    """(ids, correct, code, repetition, tokens, first) of rows the numpy fold can take; None otherwise.

    The one place the full fast path's preconditions live (:func:`_accuracy_columns`'
    plus the flags, token counts and sample index), shared by :func:`problem_table_fast`
    and :func:`read_final`, so both fall back on exactly the same rows.
    """
    head = _accuracy_columns(rows)
    if head is None:
        return None
    try:
        code = list(map(itemgetter("code"), rows))
        rep = list(map(itemgetter("repetition"), rows))
        tokens = [r.get("tokens") or 0 for r in rows]
        first = [r.get("i", 0) == 0 for r in rows]
    except (KeyError, TypeError, AttributeError):
        return None
    if (not set(map(type, code)) <= {bool} or not set(map(type, rep)) <= {bool}
            or not set(map(type, tokens)) <= {int, float} or not set(map(type, first)) <= {bool}):
        return None
    return (*head, code, rep, tokens, first)


def _positions_of(ids: list, positions: dict[str, int]) -> np.ndarray:
    """Each id's place in ``positions`` (-1 where absent), looked up by a C-level ``map``."""
    return np.fromiter(map(positions.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))


def read_accuracy(path: Path, positions: dict[str, int]) -> np.ndarray:
    """``accuracy(read_problems(path), ids)`` without building the per-problem table (same numbers).

    ``positions`` maps each wanted problem id to its place in the result (the base
    model's problems, in order); problems the file lacks are NaN, ones it has beyond
    them are ignored. Why: at paper scale the aggregation needs only the per-problem
    accuracy of every checkpoint but the last, and building a pandas table (and its
    string index) per file cost more than parsing the file. Anything the fast path
    would not take goes through :func:`read_problems` and :func:`accuracy`.
    """
    rows = _parse(path)
    cols = _accuracy_columns(rows) if rows is not None else None
    if cols is None:
        return accuracy(read_problems(path), pd.Index(list(positions), name="id"))
    ids, correct = cols
    where = _positions_of(ids, positions)
    keep = where >= 0
    where, c = where[keep], np.array(correct, dtype=bool)[keep]
    n = len(positions)
    samples_n = np.bincount(where, minlength=n).astype(float)
    right = np.bincount(where, weights=c, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = right / samples_n
    out[samples_n == 0] = math.nan
    return out


def read_final(path: Path, base: pd.DataFrame,
               positions: dict[str, int] | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """``(accuracy(t, base.index), classify.transitions_between(base, t))`` of ``t = read_problems(path)``.

    The same numbers without the per-problem table: the aggregation reads each run's
    final checkpoint only for its accuracies and the first samples' Code/Lang flags,
    and building (then reindexing) a pandas table per file was a tenth of its CPU.
    ``positions`` is ``{id: place}`` of ``base.index`` (built here if not given).
    Anything the fast path would not take goes through :func:`read_problems`.
    """
    rows = _parse(path)
    cols = _fast_columns(rows) if rows is not None else None
    if cols is None:
        table = read_problems(path)
        return accuracy(table, base.index), classify.transitions_between(base, table)
    if positions is None:
        positions = {pid: i for i, pid in enumerate(base.index)}
    ids, correct, code, _rep, _tokens, first = cols
    where = _positions_of(ids, positions)
    c, k, f = np.array(correct, dtype=bool), np.array(code, dtype=bool), np.array(first, dtype=bool)
    keep = where >= 0
    n = len(positions)
    samples_n = np.bincount(where[keep], minlength=n).astype(float)
    right = np.bincount(where[keep], weights=c[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = right / samples_n
    acc[samples_n == 0] = math.nan
    # each problem's last i == 0 row (as problem_table_fast folds it), aligned to the base problems
    after = np.full((n, 2), math.nan)
    sel = np.flatnonzero(f & keep)[::-1]
    probs, at = np.unique(where[sel], return_index=True)
    after[probs, 0], after[probs, 1] = k[sel[at]], c[sel[at]]
    before = base[["code0", "correct0"]].to_numpy(dtype=float)
    ok = ~(np.isnan(before).any(axis=1) | np.isnan(after).any(axis=1))
    return acc, classify.transitions(before[ok, 0], before[ok, 1], after[ok, 0], after[ok, 1])


def read_problems(path: Path) -> pd.DataFrame:
    """:func:`classify.read_problems` of one sample file, parsed in one C call instead of line by line.

    Why: at paper scale (13.5M rows in ~31k files) per-line ``json.loads`` and the
    line iterator are most of the aggregation's CPU time. The whole file is
    decompressed, its non-blank lines joined into one JSON array and parsed at
    once; any surprise (bad gzip, bad UTF-8, bad JSON, a line holding more or less
    than one value) falls back to :func:`classify.read_problems`, which gives the
    same table or raises the same :class:`io.DataError` naming the line.
    """
    rows = _parse(path)
    return classify.read_problems(path) if rows is None else problem_table_fast(rows)


def problem_table_fast(rows: list) -> pd.DataFrame:
    """:func:`classify.problem_table` of parsed rows, folded column-wise with numpy (same table).

    The fast path needs what the evaluation writes: string ids, bool ``correct``/
    ``code``/``repetition`` flags and int/float (or absent) ``tokens``; anything
    else (flags to re-derive from the text, odd types) goes to the row-by-row fold.
    """
    cols = _fast_columns(rows)
    if cols is None:
        return classify.problem_table(rows)
    ids, correct, code, rep, tokens, first = cols
    codes, uniques = pd.factorize(np.array(ids, dtype=object))
    n = len(uniques)
    c = np.array(correct, dtype=bool)
    k = np.array(code, dtype=bool)
    values = np.empty((n, len(classify.PROBLEM_COLUMNS)), dtype=float)
    values[:, 0] = np.bincount(codes, minlength=n)
    values[:, 1] = np.bincount(codes, weights=c, minlength=n)
    values[:, 2] = np.bincount(codes, weights=k, minlength=n)
    values[:, 3] = np.bincount(codes, weights=c & k, minlength=n)
    values[:, 4] = np.bincount(codes, weights=np.array(rep, dtype=bool), minlength=n)
    values[:, 5] = np.bincount(codes, weights=np.array(tokens, dtype=float), minlength=n)
    values[:, 6:] = math.nan
    sel = np.flatnonzero(np.array(first, dtype=bool))
    if len(sel):  # the last i == 0 row of a problem wins, as in the row-by-row fold
        rev = sel[::-1]
        probs, where = np.unique(codes[rev], return_index=True)
        last = rev[where]
        values[probs, 6] = c[last]
        values[probs, 7] = k[last]
    return pd.DataFrame(values, index=pd.Index(list(uniques), name="id"), columns=list(classify.PROBLEM_COLUMNS))


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
    df = pd.DataFrame(list(io.iter_jsonl(path)))
    if len(df) and "step" not in df:
        raise io.DataError(path, "missing in a metrics row", field="step")
    return df if len(df) else pd.DataFrame(columns=["step"])


def accuracy(table: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """Per-problem accuracy (mean over its samples) in the order of ``ids``; NaN where a problem is missing."""
    t = table.reindex(ids)
    return (t["correct"] / t["samples"]).to_numpy(dtype=float)
