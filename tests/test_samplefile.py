"""The column index of a sample file (samplefile.py): the same numbers as the file, never stale.

What must hold: a reader given a fresh index computes exactly what the row-by-row fold of
the file computes; an index whose file changed (or of another format, or damaged) is
ignored; rows the evaluation would not write get no index; `spurious index-samples`
indexes older results; and the aggregation of a tree gives identical outputs with and
without indexes.
"""

from __future__ import annotations

import copy
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from spurious_rewards import io, samplefile
from spurious_rewards.analysis import aggregate, classify, samples


def _rows(seed: int = 0, problems: int = 12, k: int = 4) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"math/{p * 7 % problems}", "i": i, "response": "```python\nprint(1)\n```" * int(rng.integers(1, 3)),
             "pred": "1", "correct": bool(rng.random() < 0.5), "code": bool(rng.random() < 0.6),
             "repetition": bool(rng.random() < 0.1), "tokens": int(rng.integers(1, 90))}
            for p in range(problems) for i in range(k)]


def _same_columns(a: samplefile.Columns, b: samplefile.Columns) -> None:
    assert a.ids == b.ids
    for name in ("codes", "i", "correct", "code", "repetition", "tokens"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def test_the_index_holds_the_files_columns_and_gives_the_row_by_row_table(tmp_path: Path) -> None:
    rows = _rows()
    path = tmp_path / "step10_math.jsonl.gz"
    assert samplefile.write(rows, path) == len(rows)
    assert samplefile.index_path(path).is_file()
    from_index = samplefile.read_index(path)
    assert from_index is not None
    _same_columns(from_index, samplefile.columns_of(io.parse_jsonl(path)))
    # the per-problem table from the index is the row-by-row fold of the text, exactly
    pd.testing.assert_frame_equal(samples.read_problems(path), classify.read_problems(path), check_exact=True)
    # the sample file itself is what io.write_jsonl writes (the index is beside it, not in it)
    assert list(io.iter_jsonl(path)) == rows
    assert samples.sample_files(tmp_path) == {(10, "math"): path}  # readers of folders never see the index


def test_an_index_whose_file_changed_is_ignored(tmp_path: Path) -> None:
    """A rewritten file, even of the same size, reads from its text; so does an index of another format."""
    rows = _rows()
    path = tmp_path / "step10_math.jsonl.gz"
    samplefile.write(rows, path)
    index = samplefile.index_path(path).read_bytes()
    flipped = [{**r, "correct": not r["correct"]} if r["id"] == "math/0" else r for r in rows]
    io.write_jsonl(flipped, path)  # the old index stays beside it
    assert samplefile.index_path(path).read_bytes() == index
    assert samplefile.read_index(path) is None
    pd.testing.assert_frame_equal(samples.read_problems(path), classify.read_problems(path), check_exact=True)
    assert samples.read_problems(path).loc["math/0", "correct"] == sum(
        not r["correct"] for r in rows if r["id"] == "math/0")
    # same length, other bytes: one response's text changed ("1" -> "2"); the trailer's CRC tells
    io.write_jsonl(rows, path)
    samplefile.write_index(path)
    same_size = [{**r, "response": r["response"].replace("1", "2")} if j == 5 else r for j, r in enumerate(rows)]
    before = samplefile.fingerprint(path)
    io.write_jsonl(same_size, path)
    after = samplefile.fingerprint(path)
    assert after["isize"] == before["isize"] and after != before
    assert samplefile.read_index(path) is None
    # another format, or a damaged index: read as no index
    samplefile.write_index(path)
    table = feather.read_table(str(samplefile.index_path(path)))
    meta = json.loads(table.schema.metadata[b"spurious"])
    feather.write_feather(table.replace_schema_metadata({b"spurious": json.dumps({**meta, "format": "other/0"})}),
                          str(samplefile.index_path(path)))
    assert samplefile.read_index(path) is None
    samplefile.index_path(path).write_bytes(b"not arrow")
    assert samplefile.read_index(path) is None
    assert samples.read_accuracy(path, {"math/0": 0}).tolist() == [
        np.mean([r["correct"] for r in same_size if r["id"] == "math/0"])]


@pytest.mark.parametrize("case", ["no_code_flag", "int_flags", "plain_text", "empty"])
def test_rows_the_fast_path_cannot_take_get_no_index(tmp_path: Path, case: str) -> None:
    rows = _rows()
    path = tmp_path / "step0_math.jsonl.gz"
    if case == "no_code_flag":  # an older file: the flag is re-derived from the text
        rows = [{k: v for k, v in r.items() if k != "code"} for r in rows]
    elif case == "int_flags":
        rows = [{**r, "correct": int(r["correct"])} for r in rows]
    elif case == "empty":
        rows = []
    if case == "plain_text":  # not gzip: no trailer to bind an index to
        path = tmp_path / "step0_math.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert samplefile.fingerprint(path) is None and not samplefile.write_index(path)
    else:
        assert samplefile.write(rows, path) == len(rows)
    assert not samplefile.index_path(path).exists()
    if rows:
        pd.testing.assert_frame_equal(samples.read_problems(path), classify.read_problems(path), check_exact=True)


def test_index_samples_cli_indexes_older_results(tmp_path: Path) -> None:
    tree = tmp_path / "eval" / "m" / "base" / "samples"
    for step in (0, 10):
        io.write_jsonl(_rows(step), tree / f"step{step}_math.jsonl.gz")  # as written before indexes
    io.write_jsonl([{k: v for k, v in r.items() if k != "code"} for r in _rows()], tree / "step20_math.jsonl.gz")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "index-samples", *args],
                              capture_output=True, text=True, timeout=120)

    res = run(str(tmp_path / "eval"), "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "2 written, 0 already fresh, 1 files skipped" in res.stderr
    assert samplefile.read_index(tree / "step0_math.jsonl.gz") is not None
    assert not samplefile.index_path(tree / "step20_math.jsonl.gz").exists()
    res = run(str(tree / "step10_math.jsonl.gz"))
    assert res.returncode == 0 and "0 written, 1 already fresh, 0 files skipped" in res.stderr
    res = run(str(tmp_path / "nowhere"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr and "nowhere" in res.stderr


def _aggregate_outputs(cfg: dict, root: Path, out: Path) -> dict[str, bytes]:
    paths = aggregate.aggregate(cfg, out, results_dir=root, n_boot=200)
    return {k: p.read_bytes() for k, p in paths.items() if p.suffix == ".csv"}


@pytest.mark.slow
def test_aggregation_is_the_same_with_and_without_indexes(planted_study, tmp_path: Path, monkeypatch) -> None:
    """The planted tree (every file indexed, as the evaluation writes it), its copy without indexes and one
    with a stale index: every table byte-identical (the stale file's numbers follow its text)."""
    cfg, root, _ = planted_study
    cfg = copy.deepcopy(cfg)
    parse = io.parse_jsonl  # training logs are still parsed; sample files must not be
    with monkeypatch.context() as m:  # indexed: not one sample file is parsed
        m.setattr(io, "parse_jsonl",
                  lambda path: pytest.fail(f"parsed {path}") if str(path).endswith(".jsonl.gz") else parse(path))
        m.setattr(classify, "read_problems", lambda path: pytest.fail(f"read {path} row by row"))
        with_index = _aggregate_outputs(cfg, root, tmp_path / "a")
    bare = tmp_path / "bare"
    for part in ("eval", "train", "audit"):
        shutil.copytree(root / part, bare / part)
    indexes = sorted(bare.rglob("*" + samplefile.INDEX_SUFFIX))
    assert len(indexes) > 50
    for p in indexes:
        p.unlink()
    assert _aggregate_outputs(cfg, bare, tmp_path / "b") == with_index
    # a stale index: the file under it rewritten with every answer of one checkpoint wrong
    target = sorted((bare / "eval").rglob("step20_arith.jsonl.gz"))[0]
    samplefile.write_index(target)
    stale = samplefile.index_path(target).read_bytes()
    io.write_jsonl([{**r, "correct": False} for r in io.iter_jsonl(target)], target)
    samplefile.index_path(target).write_bytes(stale)
    changed = _aggregate_outputs(cfg, bare, tmp_path / "c")
    assert changed["summary_stats"] != with_index["summary_stats"]
    for p in bare.rglob("*" + samplefile.INDEX_SUFFIX):
        p.unlink()
    assert _aggregate_outputs(cfg, bare, tmp_path / "d") == changed


def test_index_dtypes_are_arrows_own(tmp_path: Path) -> None:
    """Any Arrow reader opens an index: a dictionary-encoded id, int32 sample index, bool flags, float tokens."""
    path = tmp_path / "step0_m.jsonl.gz"
    samplefile.write(_rows(), path)
    table = feather.read_table(str(samplefile.index_path(path)))
    assert table.schema.field("id").type == pa.dictionary(pa.int32(), pa.string())
    assert [str(t) for t in table.schema.types[1:]] == ["int32", "bool", "bool", "bool", "double"]
    assert table.num_rows == len(_rows())
    assert gzip.decompress(path.read_bytes()).count(b"\n") == table.num_rows


def test_a_file_of_more_rows_than_one_arrow_batch_is_indexed_whole(tmp_path: Path) -> None:
    """feather's default 64k-row chunks would give several batches; the index is one, and reads back."""
    rows = [{"id": f"p{j // 16}", "i": j % 16, "response": "", "pred": "", "correct": j % 3 == 0,
             "code": j % 5 == 0, "repetition": False, "tokens": j % 7} for j in range(70_000)]
    path = tmp_path / "step0_big.jsonl.gz"
    samplefile.write(rows, path)
    cols = samplefile.read_index(path)
    assert cols is not None and len(cols) == 70_000 and len(cols.ids) == 70_000 // 16
    assert int(cols.correct.sum()) == sum(r["correct"] for r in rows)
