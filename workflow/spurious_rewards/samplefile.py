"""A sample file (``step{N}_{benchmark}.jsonl.gz``) and its column index: written once, read fast.

A sample file holds one JSON row per sampled response: ``{id, i, response, pred, correct,
code, repetition, tokens}``. Everything the analysis computes from it (accuracies, style
rates, Code/Lang transitions, the bootstrap over problems) needs the small columns, never
the response text, which is ~95% of the bytes. So beside each sample file the evaluation
writes its **column index**, ``<file>.columns.arrow``: the same rows' ``id`` (dictionary
encoded, first-seen order), ``i``, ``correct``, ``code``, ``repetition`` and ``tokens`` as
an Arrow IPC (Feather v2) file. Reading an index costs ~0.1 ms where decompressing and
parsing the file costs ~2 ms (bench/bench_analysis.py), which is what lets the
aggregation of a paper-size grid (~31k files, 20M responses) run below the cost of
reading its sample files once.

Why it is never stale: the index records its sample file's *fingerprint*, the
compressed size and the gzip trailer (CRC-32 and length of the uncompressed bytes, read
with one seek), and a reader uses it only when the file still has that fingerprint and
the index has this module's :data:`FORMAT`. Anything else (no index, an edited or
regenerated sample file, a plain-text file, an older format) reads the sample file
itself, so an index can only ever make a reader faster, never change a number.
``spurious index-samples`` writes the indexes of sample files made before they existed.

Why Arrow: pyarrow is already installed (datasets needs it), the format keeps types and
a dictionary-encoded id column, reads without parsing, and any dataframe library opens it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc

from . import io

__all__ = [
    "FORMAT",
    "INDEX_SUFFIX",
    "Columns",
    "columns_of",
    "ensure_index",
    "fingerprint",
    "index_path",
    "index_tree",
    "read_columns",
    "read_index",
    "sample_paths",
    "write",
    "write_index",
]

#: ``<sample file><INDEX_SUFFIX>`` is its column index (readers of sample folders match
#: ``step*_*.jsonl.gz`` exactly, so they never take it for a sample file)
INDEX_SUFFIX = ".columns.arrow"
#: the index layout; a reader ignores an index of any other format (and reads the sample file)
FORMAT = "spurious-columns/1"
_META_KEY = b"spurious"


@dataclass(frozen=True)
class Columns:
    """The small columns of a sample file's rows, row order kept.

    ``ids`` are the distinct problem ids in first-seen order and ``codes[j]`` the
    place of row j's id among them (what ``pandas.factorize`` gives), so a fold per
    problem is one ``bincount``.
    """

    ids: list[str]
    codes: np.ndarray  # int, one per row
    i: np.ndarray  # int: the sample's index within its problem
    correct: np.ndarray  # bool
    code: np.ndarray  # bool: the evaluation's code-reasoning label
    repetition: np.ndarray  # bool
    tokens: np.ndarray  # float: response length in tokens (0 where a row has none)

    def __len__(self) -> int:
        return len(self.codes)


def index_path(sample_path: str | os.PathLike[str]) -> Path:
    """Where the column index of ``sample_path`` lives."""
    p = Path(sample_path)
    return p.with_name(p.name + INDEX_SUFFIX)


def fingerprint(sample_path: str | os.PathLike[str]) -> dict[str, int] | None:
    """The compressed size and gzip trailer (CRC-32, uncompressed length mod 2^32) of a gzip file; None otherwise.

    Two reads of a few bytes (``pread``): cheap enough to check on every file the
    analysis reads, and it changes whenever the uncompressed content does (but with odds
    of 2^-32).
    """
    try:
        fd = os.open(sample_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size < 18 or os.pread(fd, 2, 0) != io.GZIP_MAGIC:
            return None
        tail = os.pread(fd, 8, size - 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    return {"bytes": size, "crc32": int.from_bytes(tail[:4], "little"), "isize": int.from_bytes(tail[4:], "little")}


def columns_of(rows: list) -> Columns | None:
    """The :class:`Columns` of parsed rows, or None where a row is not as the evaluation writes it.

    The one place the fast path's preconditions live: string ids, bool ``correct``/
    ``code``/``repetition`` flags, int/float (or absent) ``tokens`` and int (or absent)
    ``i``. Rows without a flag (to re-derive from the text) or with odd types give None,
    and the readers fold them row by row (classify.problem_table). Extracted with
    C-level ``map``s: a Python loop over the rows cost a fifth of parsing them.
    """
    if not rows:
        return None
    try:
        ids = list(map(itemgetter("id"), rows))
        correct = list(map(itemgetter("correct"), rows))
        code = list(map(itemgetter("code"), rows))
        rep = list(map(itemgetter("repetition"), rows))
        tokens = [r.get("tokens") or 0 for r in rows]
        first = [r.get("i", 0) for r in rows]
    except (KeyError, TypeError, AttributeError):
        return None
    if (set(map(type, ids)) != {str} or not set(map(type, correct)) <= {bool}
            or not set(map(type, code)) <= {bool} or not set(map(type, rep)) <= {bool}
            or not set(map(type, tokens)) <= {int, float} or not set(map(type, first)) <= {int}):
        return None
    codes, uniques = pd.factorize(np.array(ids, dtype=object))
    return Columns(ids=list(uniques), codes=codes.astype(np.int64), i=np.array(first, dtype=np.int64),
                   correct=np.array(correct, dtype=bool), code=np.array(code, dtype=bool),
                   repetition=np.array(rep, dtype=bool), tokens=np.array(tokens, dtype=float))


#: the index's columns and their Arrow types, in file order
_COLUMN_TYPES = {"id": pa.dictionary(pa.int32(), pa.string()), "i": pa.int32(), "correct": pa.bool_(),
                 "code": pa.bool_(), "repetition": pa.bool_(), "tokens": pa.float64()}


def _table(cols: Columns, source: dict[str, int]) -> pa.Table:
    ids = pa.DictionaryArray.from_arrays(pa.array(cols.codes, type=pa.int32()), pa.array(cols.ids, type=pa.string()))
    arrays = [ids, pa.array(cols.i, type=pa.int32()), pa.array(cols.correct, type=pa.bool_()),
              pa.array(cols.code, type=pa.bool_()), pa.array(cols.repetition, type=pa.bool_()),
              pa.array(cols.tokens, type=pa.float64())]
    table = pa.Table.from_arrays(arrays, schema=pa.schema(list(_COLUMN_TYPES.items())))
    return table.replace_schema_metadata({_META_KEY: json.dumps({"format": FORMAT, "source": source})})


def write_index(sample_path: str | os.PathLike[str], cols: Columns | None = None) -> bool:
    """Write the column index of an existing sample file (from ``cols``, or by reading it); False where none can be.

    None can be where the file is not gzip (no trailer to bind the index to) or its
    rows are not as the evaluation writes them (:func:`columns_of`).
    """
    source = fingerprint(sample_path)
    if source is None:
        return False
    if cols is None:
        rows = io.parse_jsonl(sample_path)
        cols = columns_of(rows) if rows is not None else None
        if cols is None:
            return False
    with io.atomic_output(index_path(sample_path)) as tmp:
        # uncompressed: lz4 makes it 40% smaller but 3.5x slower to read (0.23 vs 0.065 ms per file);
        # the index is still a few percent of its sample file, whose text dominates
        table = _table(cols, source)  # one record batch, however many rows (read_index reads one)
        feather.write_feather(table, str(tmp), compression="uncompressed", chunksize=max(1, table.num_rows))
    return True


def write(rows: list[dict], path: str | os.PathLike[str]) -> int:
    """Write a sample file (:func:`io.write_jsonl`, gzip) and its column index; returns the number of rows.

    The index is written after the file (it records the file's fingerprint); a job
    killed between the two leaves a file without an index, which readers read in full.
    """
    n = io.write_jsonl(rows, path)
    cols = columns_of(rows)
    if cols is not None:
        write_index(path, cols)
    return n


def read_index(sample_path: str | os.PathLike[str]) -> Columns | None:
    """The :class:`Columns` from the index of ``sample_path`` where it exists and still matches the file; else None.

    Read as bytes and opened in memory (``pyarrow.ipc``, one record batch): a third of
    the cost of ``feather.read_table`` on these ~10 KB files, where per-call overhead
    is all there is (the analysis reads tens of thousands of them).
    """
    path = os.fspath(sample_path)
    try:
        with open(path + INDEX_SUFFIX, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        reader = ipc.open_file(pa.py_buffer(data))
        doc = json.loads((reader.schema.metadata or {})[_META_KEY])
        if doc.get("format") != FORMAT or doc.get("source") != fingerprint(path) or reader.num_record_batches != 1:
            return None
        batch = reader.get_batch(0)
        if batch.schema.names != list(_COLUMN_TYPES):
            return None
        ids, i, correct, code, rep, tokens = batch.columns
        return Columns(ids=ids.dictionary.to_pylist(), codes=ids.indices.to_numpy().astype(np.int64),
                       i=i.to_numpy().astype(np.int64), correct=correct.to_numpy(zero_copy_only=False),
                       code=code.to_numpy(zero_copy_only=False), repetition=rep.to_numpy(zero_copy_only=False),
                       tokens=tokens.to_numpy().astype(float, copy=False))
    except (pa.ArrowException, KeyError, ValueError, TypeError, AttributeError):  # a damaged index: none
        return None


def read_columns(sample_path: str | os.PathLike[str]) -> tuple[Columns | None, list | None]:
    """``(columns, rows)`` of a sample file: from its index when fresh, else parsed (rows given too).

    ``columns`` is None where the fast path cannot take the file; ``rows`` is None
    where the index answered or the file did not parse in one call (the row-by-row
    reader then decides).
    """
    cols = read_index(sample_path)
    if cols is not None:
        return cols, None
    rows = io.parse_jsonl(sample_path)
    return (columns_of(rows) if rows is not None else None), rows


def sample_paths(roots: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every ``*.jsonl.gz`` under ``roots`` (files or folders), in path order."""
    for root in map(Path, roots):
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from sorted(root.rglob("*.jsonl.gz"))


def ensure_index(sample_path: str | os.PathLike[str]) -> str:
    """Give one sample file a fresh index: ``"fresh"`` (it had one), ``"written"`` or ``"skipped"`` (none can be)."""
    if read_index(sample_path) is not None:
        return "fresh"
    return "written" if write_index(sample_path) else "skipped"


def index_tree(roots: Iterable[str | os.PathLike[str]], workers: int = 1) -> dict[str, int]:
    """:func:`ensure_index` on every sample file under ``roots``; counts by outcome.

    For results written before indexes existed (``spurious index-samples``): the
    analysis reads them either way, an index only makes it read faster.
    """
    paths = list(sample_paths(roots))
    if workers > 1 and len(paths) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            outcomes = list(pool.map(ensure_index, paths, chunksize=16))
    else:
        outcomes = [ensure_index(p) for p in paths]
    return {k: outcomes.count(k) for k in ("written", "fresh", "skipped")}
