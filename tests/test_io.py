"""spurious_rewards.io: atomic outputs, reproducible JSONL/JSON, and located read errors."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spurious_rewards.io import (
    DataError,
    atomic_output,
    iter_jsonl,
    iter_jsonl_numbered,
    read_json,
    write_json,
    write_jsonl,
)

# ----------------------------------------------------------------------------- DataError


def test_data_error_message_format() -> None:
    e = DataError("a/b.jsonl", "expected a string", line=7, field="answer")
    assert str(e) == "a/b.jsonl:7: field 'answer': expected a string"
    assert (e.file, e.line, e.field, e.problem) == ("a/b.jsonl", 7, "answer", "expected a string")
    assert str(DataError("f.json", "empty")) == "f.json: empty"
    assert str(DataError("f.json", "bad", field="id")) == "f.json: field 'id': bad"
    assert isinstance(e, ValueError)


# ----------------------------------------------------------------------------- atomic_output


def test_atomic_output_file_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.jsonl.gz"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(f".out.tmp-{os.getpid()}-") and tmp.name.endswith(".jsonl.gz")
        assert not target.exists()
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.jsonl.gz"]


def test_atomic_output_temp_names_unique(tmp_path: Path) -> None:
    with atomic_output(tmp_path / "x.json") as a, atomic_output(tmp_path / "x.json") as b:
        assert a != b
        a.write_text("1")
        b.write_text("2")
    assert (tmp_path / "x.json").read_text() in ("1", "2")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


@pytest.mark.parametrize("make", ["file", "dir"])
def test_atomic_output_failure_leaves_target_untouched(tmp_path: Path, make: str) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(target) as tmp:
        if make == "file":
            tmp.write_text("half")
        else:
            tmp.mkdir()
            (tmp / "part").write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_output_failure_without_target(tmp_path: Path) -> None:
    with pytest.raises(KeyError), atomic_output(tmp_path / "new.txt") as tmp:
        tmp.write_text("half")
        raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_body_must_create_something(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="did not create"), atomic_output(tmp_path / "t"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_directory_replaces_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale").write_text("old")
    with atomic_output(target) as tmp:
        tmp.mkdir()
        (tmp / "model.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["model.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from spurious_rewards.io import atomic_output
    with atomic_output(sys.argv[1]) as tmp:
        with open(tmp, "w") as f:
            f.write('{"id": "0"}\\n' * 10000)
            f.flush()
            print("WRITING", flush=True)
            time.sleep(60)
    """
)


@pytest.mark.parametrize("pre_existing", [False, True])
def test_killed_writer_leaves_no_partial_target(tmp_path: Path, pre_existing: bool) -> None:
    target = tmp_path / "records.jsonl"
    if pre_existing:
        target.write_text("previous complete output\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "WRITING"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if pre_existing:
        assert target.read_text() == "previous complete output\n"
    else:
        assert not target.exists()
    # the only debris is the hidden, pid-tagged temporary, which no rule names as an input
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(n.startswith(f".records.tmp-{proc.pid}-") for n in leftovers)


# ----------------------------------------------------------------------------- JSONL


RECORDS = [{"id": "a", "prompt": "x² + 1 = ?", "answer": "\\frac{1}{2}"}, {"n": 1}, [1, 2], "s", None]


@pytest.mark.parametrize("name", ["r.jsonl", "r.jsonl.gz"])
def test_jsonl_roundtrip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_jsonl(iter(RECORDS), path) == len(RECORDS)
    assert list(iter_jsonl(path)) == RECORDS
    assert [n for n, _ in iter_jsonl_numbered(path)] == [1, 2, 3, 4, 5]
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_jsonl_plain_is_utf8_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(RECORDS[:2], path)
    assert path.read_text(encoding="utf-8") == (
        '{"id": "a", "prompt": "x² + 1 = ?", "answer": "\\\\frac{1}{2}"}\n{"n": 1}\n'
    )


def test_gzip_output_is_byte_reproducible(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_jsonl(RECORDS, a)
    os.utime(a, (0, 0))
    write_jsonl(RECORDS, b)
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()).decode().count("\n") == len(RECORDS)


def test_iter_jsonl_skips_blank_lines_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"a": 2}\n')
    assert list(iter_jsonl_numbered(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize("gz", [False, True])
def test_iter_jsonl_undecodable_bytes(tmp_path: Path, gz: bool) -> None:
    data = b'{"a": 1}\n{"a": "caf\xe9"}\n'
    path = tmp_path / "bad.jsonl"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        list(iter_jsonl(path))
    assert exc.value.line == 2
    assert str(exc.value).startswith(f"{path}:2: ")


def test_iter_jsonl_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": \n')
    it = iter_jsonl(path)
    assert next(it) == {"a": 1}  # streaming: good lines come out before the bad one is read
    with pytest.raises(DataError, match=r"invalid JSON") as exc:
        list(it)
    assert str(exc.value).startswith(f"{path}:3: ")


def test_iter_jsonl_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    write_jsonl([{"i": i, "pad": "x" * 50} for i in range(200)], path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="corrupt compressed data") as exc:
        list(iter_jsonl(path))
    assert exc.value.file == str(path)


@pytest.mark.parametrize("case", ["good", "blank_lines", "bad_utf8", "bad_json", "two_values_one_line", "truncated_gz"])
def test_read_jsonl_is_list_of_iter_jsonl_values_and_errors(tmp_path: Path, case: str) -> None:
    """read_jsonl (one C call where it can) gives what list(iter_jsonl) gives: the values, or the same DataError."""
    from spurious_rewards.io import read_jsonl

    path = tmp_path / ("r.jsonl.gz" if case == "truncated_gz" else "r.jsonl")
    data = {"good": b'{"a": 1}\n[2]\n"s"\n', "blank_lines": b'{"a": 1}\n\n  \n{"a": 2}',
            "bad_utf8": b'{"a": 1}\n{"a": "caf\xe9"}\n', "bad_json": b'{"a": 1}\n{"a": \n',
            "two_values_one_line": b'{"a": 1},{"a": 2}\n'}.get(case)
    if case == "truncated_gz":
        write_jsonl([{"i": i, "pad": "x" * 50} for i in range(200)], path)
        path.write_bytes(path.read_bytes()[:-20])
    else:
        path.write_bytes(data)
    try:
        want = list(iter_jsonl(path))
    except DataError as exc:
        with pytest.raises(DataError) as got:
            read_jsonl(path)
        assert str(got.value) == str(exc)
    else:
        assert read_jsonl(path) == want and case in ("good", "blank_lines")


# ----------------------------------------------------------------------------- JSON


def test_write_json_sorted_indented_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m" / "metrics.json"
    write_json({"b": 1, "a": {"z": [1, 2], "y": "é"}}, path)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps({"a": {"y": "é", "z": [1, 2]}, "b": 1}, indent=2, ensure_ascii=False) + "\n"
    assert read_json(path) == {"b": 1, "a": {"z": [1, 2], "y": "é"}}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_read_json_errors_name_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(DataError, match="invalid JSON") as exc:
        read_json(path)
    assert exc.value.line == 4
    path.write_bytes(b'{\n"a": "\xff"}')
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        read_json(path)
    assert exc.value.line == 2
