"""spurious_rewards.data: every source through one loader, and every bad-data case located.

The fixtures under workflow/resources/fixtures/ are hand-written, tiny, and laid out like
the real hub repos, so these tests run the same ``load_dataset`` path as the real data.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported anywhere: never touch the network
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spurious_rewards.data import (
    ONE_SHOT_ANSWER,
    ONE_SHOT_PROMPT,
    RECORD_FIELDS,
    DataError,
    load_records,
    prepare,
    prepare_to_file,
    synthetic,
)

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "workflow" / "resources" / "fixtures"


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep load_dataset's Arrow cache out of ~/.cache and make offline mode certain."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.getbasetemp() / "hf_cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


# The config entries for each fixture: the field mapping each real source needs.
SPECS: dict[str, dict[str, Any]] = {
    "deepscaler": {
        "kind": "hub",
        "path": str(FIX / "deepscaler"),
        "configs": None,
        "split": "train",
        "fields": {"prompt": "problem", "answer": "answer", "id": None},
        "source": "deepscaler",
        "limit": None,
    },
    "math500": {
        "kind": "hub",
        "path": str(FIX / "math500"),
        "configs": None,
        "split": "test",
        "fields": {"prompt": "problem", "answer": "answer", "id": "unique_id"},
        "source": "math",
        "limit": None,
    },
    "amc": {
        "kind": "hub",
        "path": str(FIX / "amc"),
        "configs": None,
        "split": "train",
        "fields": {"prompt": "problem", "answer": "answer", "id": None},
        "source": "amc",
        "limit": None,
    },
    "aime24": {
        "kind": "hub",
        "path": str(FIX / "aime24"),
        "configs": None,
        "split": "train",
        "fields": {"prompt": "problem", "answer": "answer", "id": "id"},
        "source": "aime",
        "limit": None,
    },
    "aime25": {
        "kind": "hub",
        "path": str(FIX / "aime25"),
        "configs": ["AIME2025-I", "AIME2025-II"],
        "split": "test",
        "fields": {"prompt": "question", "answer": "answer", "id": None},
        "source": "aime2025",
        "limit": None,
    },
}


def spec(name: str, **overrides: Any) -> dict[str, Any]:
    return {"name": name, **SPECS[name], **overrides}


def hub_file_spec(path: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "local",
        "kind": "hub",
        "path": str(path),
        "split": "test",
        "fields": {"prompt": "problem", "answer": "answer", "id": None},
        **overrides,
    }


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- fixtures have the real shapes


def test_fixtures_load_like_the_hub_repos() -> None:
    """load_dataset(<dir>) resolves each fixture to the real repo's splits and dtypes (docs/datasets.md §0-§5)."""
    ds = datasets.load_dataset(str(FIX / "deepscaler"))
    assert list(ds) == ["train"]
    assert ds["train"].column_names == ["problem", "solution", "answer"]
    assert "" in ds["train"]["solution"]

    ds = datasets.load_dataset(str(FIX / "math500"))
    assert list(ds) == ["test"]
    assert ds["test"].column_names == ["problem", "solution", "answer", "subject", "level", "unique_id"]
    assert ds["test"].features["level"].dtype == "int64"

    ds = datasets.load_dataset(str(FIX / "amc"))["train"]
    assert {c: ds.features[c].dtype for c in ds.column_names} == {
        "id": "int64",
        "problem": "string",
        "answer": "float64",
        "url": "string",
    }
    assert len(set(ds["id"])) < len(ds)  # ids restart per year, as in the real set

    ds = datasets.load_dataset(str(FIX / "aime24"))["train"]
    assert ds.column_names == ["id", "problem", "solution", "answer", "url", "year"]
    assert ds.features["answer"].dtype == "string" and ds.features["year"].dtype == "string"
    assert all(len(a) == 3 for a in ds["answer"][:2])  # zero-padded, e.g. "066"

    with pytest.raises(ValueError, match="Config name is missing"):
        datasets.load_dataset(str(FIX / "aime25"))
    for config in ("AIME2025-I", "AIME2025-II"):
        ds = datasets.load_dataset(str(FIX / "aime25"), config)
        assert list(ds) == ["test"] and ds["test"].column_names == ["question", "answer"]


# ----------------------------------------------------------------------------- prepare: kind hub


@pytest.mark.parametrize(
    ("name", "n", "first_id", "last_id"),
    [
        ("deepscaler", 6, "deepscaler-0", "deepscaler-5"),
        ("math500", 6, "test/counting_and_probability/901.json", "test/geometry/906.json"),
        ("amc", 5, "amc-0", "amc-4"),
        ("aime24", 4, "60", "63"),
        ("aime25", 6, "AIME2025-I-0", "AIME2025-II-2"),
    ],
)
def test_prepare_fixture(name: str, n: int, first_id: str, last_id: str) -> None:
    records = prepare(spec(name))
    assert len(records) == n
    assert all(list(r) == list(RECORD_FIELDS) for r in records)
    assert all(isinstance(r[f], str) for r in records for f in RECORD_FIELDS)
    assert (records[0]["id"], records[-1]["id"]) == (first_id, last_id)
    assert {r["source"] for r in records} == {SPECS[name]["source"]}
    assert not any("boxed" in r["prompt"] for r in records)  # raw problem text, no template


def test_answers_keep_the_source_form() -> None:
    assert [r["answer"] for r in prepare(spec("amc"))] == ["45.0", "9.0", "56.0", "838.0", "-7.0"]
    assert [r["answer"] for r in prepare(spec("aime24"))][:2] == ["066", "007"]
    math = {r["id"]: r["answer"] for r in prepare(spec("math500"))}
    assert math["test/precalculus/902.json"] == "\\left( 2, \\frac{3 \\pi}{2} \\right)"
    deepscaler = prepare(spec("deepscaler"))
    assert "8\\sqrt{2}" in {r["answer"] for r in deepscaler} and "11" in {r["answer"] for r in deepscaler}


def test_answer_format_int_if_integral() -> None:
    records = prepare(spec("amc", answer_format="int_if_integral"))
    assert [r["answer"] for r in records] == ["45", "9", "56", "838", "-7"]


def test_repeated_prompts_are_allowed_ids_stay_unique() -> None:
    records = prepare(spec("deepscaler"))
    prompts = [r["prompt"] for r in records]
    assert len(set(prompts)) < len(prompts)
    assert len({r["id"] for r in records}) == len(records)


def test_configs_concatenate_in_order_and_limit_spans_them() -> None:
    records = prepare(spec("aime25"))
    assert [r["id"] for r in records] == [f"AIME2025-{c}-{i}" for c in ("I", "II") for i in range(3)]
    limited = prepare(spec("aime25", limit=4))
    assert limited == records[:4]
    single = prepare(spec("aime25", configs="AIME2025-II"))
    assert single == records[3:]


def test_source_defaults_to_name() -> None:
    s = spec("math500")
    del s["source"]
    assert {r["source"] for r in prepare(s)} == {"math500"}


def test_local_files_use_the_same_loader(tmp_path: Path) -> None:
    """A single .jsonl/.json/.parquet/.csv file goes through load_dataset(<format>, data_files=...)."""
    rows = [{"problem": "1+1?", "answer": "2", "uid": 7}, {"problem": "2+2?", "answer": "4", "uid": 8}]
    write_lines(tmp_path / "a.jsonl", rows)
    (tmp_path / "b.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "d.csv").write_text("problem,answer,uid\n1+1?,2,7\n2+2?,4,8\n")
    expected = [
        {"id": "7", "prompt": "1+1?", "answer": "2", "source": "local"},
        {"id": "8", "prompt": "2+2?", "answer": "4", "source": "local"},
    ]
    for name in ("a.jsonl", "b.json", "c.parquet", "d.csv"):
        fields = {"prompt": "problem", "answer": "answer", "id": "uid"}
        for split in ("train", "test"):
            assert prepare(hub_file_spec(tmp_path / name, fields=fields, split=split)) == expected, name


def test_authors_data_file_format(tmp_path: Path) -> None:
    """The authors' code/data files (JSON arrays of prompt/answer/source/id, int or str ids) load too."""
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps(
            [
                {"id": 0, "prompt": "p0", "answer": "", "source": "x"},
                {"id": 64, "prompt": "p1", "answer": "3", "source": "x"},
            ]
        )
    )
    s = hub_file_spec(
        path,
        split="train",
        fields={"prompt": "prompt", "answer": "answer", "id": "id"},
        source="deepscaler_mv",
        allow_empty_answer=True,
    )
    assert [(r["id"], r["answer"]) for r in prepare(s)] == [("0", ""), ("64", "3")]


def test_hub_ids_really_go_to_the_hub() -> None:
    """An owner/name that is not a local path is passed to the hub (offline here: ConnectionError, not DataError)."""
    s = hub_file_spec(Path("no-such-owner/no-such-dataset"))
    s["path"] = "no-such-owner/no-such-dataset"
    with pytest.raises(ConnectionError):
        prepare(s)


# ----------------------------------------------------------------------------- prepare: synthetic, one_shot


def test_synthetic_is_deterministic_and_splits_are_disjoint() -> None:
    base = {
        "name": "arith_train",
        "kind": "synthetic",
        "n": 50,
        "seed": 3,
        "level": 1,
        "split": "train",
        "source": "arith",
    }
    a, b = prepare(base), prepare(dict(base))
    assert a == b
    assert a[0] == {
        "id": "arith_train-000000",
        "prompt": a[0]["prompt"],
        "answer": a[0]["answer"],
        "source": "arith",
    }
    assert [r["prompt"] for r in a] == [
        p.prompt for p in synthetic.generate(50, 3, split="train", id_prefix="x")
    ]
    assert prepare({**base, "seed": 4}) != a
    test = prepare({**base, "name": "arith_test", "split": "test"})
    assert not {r["prompt"] for r in a} & {r["prompt"] for r in test}
    assert not {r["id"] for r in a} & {r["id"] for r in test}
    harder = prepare({**base, "level": 3, "n": 5})
    assert all(r["answer"].lstrip("-").isdigit() for r in harder)


def test_synthetic_generator_errors_are_data_errors() -> None:
    with pytest.raises(DataError, match="split must be") as exc:
        prepare({"name": "arith", "kind": "synthetic", "n": 5, "seed": 0, "split": "validation"})
    assert exc.value.file == "datasets.arith"
    with pytest.raises(DataError, match="less than the minimum of 1") as exc:
        prepare({"name": "arith", "kind": "synthetic", "n": 0, "seed": 0, "split": "train"})
    assert exc.value.field == "n"


def test_one_shot() -> None:
    (one,) = prepare({"name": "pi1", "kind": "one_shot", "source": "one_shot"})
    assert one == {"id": "pi1", "prompt": ONE_SHOT_PROMPT, "answer": "12.8", "source": "one_shot"}
    assert ONE_SHOT_ANSWER == "12.8"
    assert ONE_SHOT_PROMPT.startswith("The pressure \\( P \\) exerted by wind on a sail varies jointly")
    assert ONE_SHOT_PROMPT.endswith(
        "pounds. Let's think step by step and output the final answer within \\boxed{}."
    )
    copies = prepare({"name": "pi1", "kind": "one_shot", "copies": 4})
    assert [r["id"] for r in copies] == ["pi1-0", "pi1-1", "pi1-2", "pi1-3"]
    assert {r["prompt"] for r in copies} == {ONE_SHOT_PROMPT}


# ----------------------------------------------------------------------------- prepare_to_file / load_records


def test_prepare_to_file_roundtrip_and_reproducible(tmp_path: Path) -> None:
    out = tmp_path / "data" / "aime25.jsonl"
    assert prepare_to_file(spec("aime25"), out) == 6
    first = out.read_bytes()
    assert load_records(out) == prepare(spec("aime25"))
    prepare_to_file(spec("aime25"), out)
    assert out.read_bytes() == first
    gz = tmp_path / "aime25.jsonl.gz"
    prepare_to_file(spec("aime25"), gz)
    assert load_records(gz) == load_records(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["aime25.jsonl"]


# ----------------------------------------------------------------------------- bad data: prepare


def test_missing_column_names_path_column_and_available(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        prepare(spec("aime25", fields={"prompt": "problem", "answer": "answer"}))
    msg = str(exc.value)
    assert str(FIX / "aime25") in msg and "'problem'" in msg and "available columns: question, answer" in msg
    assert exc.value.field == "problem"


def test_empty_local_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="file is empty") as exc:
        prepare(hub_file_spec(empty))
    assert str(empty) in str(exc.value)


def test_empty_data_file_in_a_directory(tmp_path: Path) -> None:
    (tmp_path / "test.jsonl").write_bytes(b"")
    with pytest.raises(DataError) as exc:
        prepare(hub_file_spec(tmp_path))
    assert str(tmp_path) in str(exc.value)


def test_empty_dataset_with_header_only(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("problem,answer\n")
    with pytest.raises(DataError, match="split 'test' has no rows") as exc:
        prepare(hub_file_spec(path))
    assert exc.value.file == str(path)


def test_zero_row_parquet_reports_the_root_cause(tmp_path: Path) -> None:
    path = tmp_path / "zero.parquet"
    pq.write_table(
        pa.table({"problem": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path
    )
    with pytest.raises(DataError, match="caused by") as exc:  # datasets 5.2 itself cannot read it
        prepare(hub_file_spec(path))
    assert exc.value.file == str(path)


@pytest.mark.parametrize("bad", [None, "", "   "])
def test_null_or_empty_prompt_names_row_and_column(tmp_path: Path, bad: str | None) -> None:
    path = write_lines(
        tmp_path / "p.jsonl", [{"question": "ok", "answer": "1"}, {"question": bad, "answer": "2"}]
    )
    s = hub_file_spec(path, fields={"prompt": "question", "answer": "answer"})
    with pytest.raises(DataError) as exc:
        prepare(s)
    assert str(exc.value).startswith(f"{path}:row 1: field 'question': ")


def test_empty_answer_needs_allow_empty_answer(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "a.jsonl",
        [{"problem": "p", "answer": "1"}, {"problem": "q", "answer": ""}, {"problem": "r", "answer": None}],
    )
    with pytest.raises(DataError, match="allow_empty_answer") as exc:
        prepare(hub_file_spec(path))
    assert str(exc.value).startswith(f"{path}:row 1: field 'answer': empty")
    with pytest.raises(DataError, match="missing value") as exc:
        prepare(hub_file_spec(path, allow_empty_answer=True))  # null is not an empty label
    assert exc.value.line == "row 2"
    assert [r["answer"] for r in prepare(hub_file_spec(path, allow_empty_answer=True, limit=2))] == ["1", ""]


def test_duplicate_ids_name_id_and_both_rows() -> None:
    with pytest.raises(DataError) as exc:
        prepare(spec("amc", fields={"prompt": "problem", "answer": "answer", "id": "id"}))
    assert str(exc.value) == f"{FIX / 'amc'}:row 3: field 'id': duplicate id '0' (first at row 0)"


def test_duplicate_ids_across_configs(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "---\nconfigs:\n- config_name: a\n  data_files:\n  - split: test\n    path: a.jsonl\n"
        "- config_name: b\n  data_files:\n  - split: test\n    path: b.jsonl\n---\n"
    )
    write_lines(tmp_path / "a.jsonl", [{"q": "x", "ans": "1", "k": "k1"}])
    write_lines(tmp_path / "b.jsonl", [{"q": "y", "ans": "2", "k": "k2"}, {"q": "z", "ans": "3", "k": "k1"}])
    s = hub_file_spec(tmp_path, configs=["a", "b"], fields={"prompt": "q", "answer": "ans", "id": "k"})
    with pytest.raises(DataError) as exc:
        prepare(s)
    assert (
        str(exc.value) == f"{tmp_path}[b]:row 1: field 'k': duplicate id 'k1' (first at {tmp_path}[a]:row 0)"
    )


def test_invalid_json_in_a_source_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": \n')
    with pytest.raises(DataError, match="load_dataset failed") as exc:
        prepare(hub_file_spec(path))
    assert str(path) in str(exc.value)


@pytest.mark.parametrize(
    ("change", "field", "pattern"),
    [
        ({"limt": 3}, "limt", "unknown key"),
        ({"kind": "magic"}, "kind", "'magic' is not allowed; allowed values: hub, synthetic, one_shot"),
        ({"split": None}, "split", "None is not of type 'string'"),
        ({"limit": 0}, "limit", "less than the minimum of 1"),
        ({"fields": {"prompt": "problem"}}, "fields", "'answer' is a required property"),
        (
            {"fields": {"prompt": "problem", "answer": "answer", "label": "x"}},
            "fields",
            "unknown key 'fields.label'; allowed keys under 'fields': answer, id, prompt",
        ),
        ({"answer_format": "pad3"}, "answer_format", "allowed values: as_is, int_if_integral"),
        ({"configs": []}, "configs", "should be non-empty"),
        ({"allow_empty_answer": "false"}, "allow_empty_answer", "is not of type 'boolean'"),
        ({"copies": 3}, "copies", "unknown key 'copies'"),  # a one_shot key on a hub dataset
    ],
)
def test_bad_spec(change: dict[str, Any], field: str, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern) as exc:
        prepare(spec("math500", **change))
    assert exc.value.file == "datasets.math500" and exc.value.field == field


def test_config_required_but_missing() -> None:
    with pytest.raises(DataError, match="Config name is missing") as exc:
        prepare(spec("aime25", configs=None))
    assert exc.value.file == str(FIX / "aime25")


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        prepare(hub_file_spec(tmp_path / "nope"))
    with pytest.raises(DataError, match="no such file or directory"):
        prepare(hub_file_spec(Path("workflow/resources/fixtures/not-there")))


def test_wrong_split_names_available() -> None:
    with pytest.raises(DataError, match=r"Unknown split \"train\"") as exc:
        prepare(spec("math500", split="train"))
    assert exc.value.file == str(FIX / "math500")


# ----------------------------------------------------------------------------- bad data: load_records

GOOD = {"id": "a", "prompt": "p", "answer": "1", "source": "s"}


def test_load_records_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="no records") as exc:
        load_records(path)
    assert exc.value.file == str(path)


def test_load_records_duplicate_ids(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [GOOD, {**GOOD, "id": "b"}, {**GOOD, "prompt": "other"}])
    with pytest.raises(DataError) as exc:
        load_records(path)
    assert str(exc.value) == f"{path}:3: field 'id': duplicate id 'a' (first at line 1)"


def test_load_records_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_bytes(
        json.dumps(GOOD).encode() + b'\n{"id": "b", "prompt": "\xff\xfe", "answer": "1", "source": "s"}\n'
    )
    with pytest.raises(DataError, match="not valid UTF-8") as exc:
        load_records(path)
    assert str(exc.value).startswith(f"{path}:2: ")


def test_load_records_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"id": "b", "prompt": "p",\n')
    with pytest.raises(DataError, match="invalid JSON") as exc:
        load_records(path)
    assert str(exc.value).startswith(f"{path}:2: ")


@pytest.mark.parametrize(
    ("bad", "field", "pattern"),
    [
        ({k: v for k, v in GOOD.items() if k != "answer"}, "answer", "missing"),
        ({**GOOD, "id": 3}, "id", "expected a string, got int"),
        ({**GOOD, "prompt": None}, "prompt", "missing value"),
        ({**GOOD, "prompt": " "}, "prompt", "empty"),
        ({**GOOD, "id": ""}, "id", "empty"),
        ({**GOOD, "extra": 1}, "extra", "unexpected"),
    ],
)
def test_load_records_bad_field(tmp_path: Path, bad: dict[str, Any], field: str, pattern: str) -> None:
    path = write_lines(tmp_path / "f.jsonl", [{**GOOD, "id": "first"}, bad])
    with pytest.raises(DataError, match=pattern) as exc:
        load_records(path)
    assert str(exc.value).startswith(f"{path}:2: field '{field}': ")


def test_load_records_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('["a", "b"]\n')
    with pytest.raises(DataError, match="expected a JSON object") as exc:
        load_records(path)
    assert exc.value.line == 1


def test_load_records_empty_answer_policy(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "mv.jsonl", [GOOD, {**GOOD, "id": "b", "answer": ""}])
    assert [r["answer"] for r in load_records(path)] == ["1", ""]
    with pytest.raises(DataError, match="empty") as exc:
        load_records(path, allow_empty_answer=False)
    assert str(exc.value).startswith(f"{path}:2: field 'answer': ")


def test_label_sets_may_carry_the_true_answer(tmp_path):
    """Majority-vote and incorrect sets keep the true answer beside the (possibly wrong) label."""
    from spurious_rewards import data, io

    good = tmp_path / "mv.jsonl"
    io.write_jsonl([{"id": "a", "prompt": "What is 1+1?", "answer": "3", "source": "s", "true_answer": "2"}], good)
    assert data.load_records(good)[0]["true_answer"] == "2"
    bad = tmp_path / "bad.jsonl"
    io.write_jsonl([{"id": "a", "prompt": "p", "answer": "3", "source": "s", "true_answer": 2}], bad)
    with pytest.raises(io.DataError, match="true_answer"):
        data.load_records(bad)


# ----------------------------------------------------------------------------- worked solutions


def test_hub_solution_column_is_carried_where_the_source_has_one() -> None:
    fields = {"prompt": "problem", "answer": "answer", "id": None, "solution": "solution"}
    records = prepare(spec("deepscaler", fields=fields))
    raw = json.loads((FIX / "deepscaler" / "deepscaler.json").read_text(encoding="utf-8"))
    assert len(records) == len(raw)
    for rec, row in zip(records, raw, strict=True):
        if row["solution"]:
            assert rec["solution"] == row["solution"]
        else:  # DeepScaleR's "" = no solution: the record has none, rather than an empty one
            assert "solution" not in rec
    assert sum("solution" in r for r in records) == 2
    # the other fields are exactly those of a load without solutions
    plain = prepare(spec("deepscaler"))
    assert [{k: v for k, v in r.items() if k != "solution"} for r in records] == plain
    # a null mapping means no solutions, as for id
    assert prepare(spec("deepscaler", fields={**fields, "solution": None})) == plain


def test_a_configured_solution_column_missing_from_the_file_names_file_and_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "math.jsonl", [{"problem": "What is 1+1?", "answer": "2"}])
    with pytest.raises(DataError) as exc:
        prepare(hub_file_spec(path, fields={"prompt": "problem", "answer": "answer", "solution": "solution"}))
    msg = str(exc.value)
    assert str(path) in msg and "column 'solution' (for 'solution') not found" in msg
    assert "available columns: problem, answer" in msg and exc.value.field == "solution"


def test_solutions_survive_the_file_roundtrip_and_must_be_strings(tmp_path: Path) -> None:
    fields = {"prompt": "problem", "answer": "answer", "id": None, "solution": "solution"}
    out = tmp_path / "ds.jsonl"
    prepare_to_file(spec("deepscaler", fields=fields), out)
    assert load_records(out) == prepare(spec("deepscaler", fields=fields))
    bad = write_lines(tmp_path / "bad.jsonl", [{"id": "a", "prompt": "p", "answer": "1", "source": "s",
                                                "solution": ["not", "text"]}])
    with pytest.raises(DataError, match="must be a string") as exc:
        load_records(bad)
    assert exc.value.field == "solution"


def test_synthetic_solutions_keep_the_answers_and_work_them_out() -> None:
    base = {"name": "s", "kind": "synthetic", "n": 40, "seed": 3, "split": "train", "level": 3}
    plain, solved = prepare(base), prepare({**base, "solutions": True})
    assert [{k: v for k, v in r.items() if k != "solution"} for r in solved] == plain
    assert all("solution" not in r for r in plain)
    problems = synthetic.generate(40, 3, level=3, split="train")
    for rec, prob in zip(solved, problems, strict=True):
        steps = rec["solution"].split("\n")[0].split(". ")
        assert len(steps) == len(prob.operands) - 1  # one step per operation
        assert steps[-1].rstrip(".").endswith(f"= {prob.answer}")  # the last step is the answer itself
        assert rec["solution"].endswith(f"The answer is \\boxed{{{rec['answer']}}}.")
        assert "--" not in rec["solution"]  # a negative right operand is bracketed
    with pytest.raises(DataError, match="solutions"):
        prepare({**base, "solutions": "yes"})


def test_synthetic_steps_evaluate_in_order() -> None:
    tree = synthetic.Node(op="-", left=synthetic.Node(5),
                          right=synthetic.Node(op="*", left=synthetic.Node(op="-", left=synthetic.Node(3),
                                                                           right=synthetic.Node(10)),
                                               right=synthetic.Node(2)))
    assert tree.render() == "5-(3-10)*2"
    assert tree.steps() == ["3-10 = -7", "-7*2 = -14", "5-(-14) = 19"]
    assert tree.evaluate() == 19


# ----------------------------------------------------------------------------- schema = loaders


class _ReadKeys(dict):
    """A spec that records which keys the loader reads (``get``, ``[]``, ``in``)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


FULL_SPECS: dict[str, dict[str, Any]] = {
    # every key the schema allows for the kind, each with a value that works on the fixtures
    "hub": {**SPECS["aime25"], "description": "AIME 2025, both parts", "source": "aime25", "limit": 20,
            "allow_empty_answer": False, "answer_format": "int_if_integral", "data_dir": None, "revision": None},
    "synthetic": {"kind": "synthetic", "description": "toy", "source": "arith", "limit": 5,
                  "allow_empty_answer": False, "n": 8, "seed": 1, "level": 2, "split": "test", "id_prefix": "q",
                  "solutions": True},
    "one_shot": {"kind": "one_shot", "description": "pi1", "source": "one_shot", "limit": 3,
                 "allow_empty_answer": False, "copies": 4},
}


@pytest.mark.parametrize("kind", ["hub", "synthetic", "one_shot"])
def test_schema_and_loaders_agree_on_dataset_keys(kind: str) -> None:
    """The schema is the one source: a loader reads every key the schema allows for its kind, and no other."""
    from spurious_rewards import config

    allowed = config.definition_keys("dataset", kind)
    full = FULL_SPECS[kind]
    assert set(full) == allowed, "FULL_SPECS must set every key the schema allows for this kind"
    assert config.schema_problems(dict(full), "dataset") == []
    spec_ = _ReadKeys({"name": f"full-{kind}", **full})
    assert prepare(spec_)
    read = spec_.read - {"name"}
    assert read <= allowed, f"the loader reads keys the schema rejects for {kind}: {sorted(read - allowed)}"
    assert allowed <= read, f"the schema accepts keys the {kind} loader never reads: {sorted(allowed - read)}"


def test_schema_accepts_a_pinned_hub_revision() -> None:
    """A hub dataset can be pinned to a revision (and the other hub keys) through the config itself."""
    from spurious_rewards import config

    cfg = config.load(ROOT / "config.yaml")
    cfg["datasets"]["pinned"] = {"kind": "hub", "path": "HuggingFaceH4/MATH-500", "split": "test",
                                 "revision": "ff5b20257d8185524591543f8ff5993951537bb8", "data_dir": None,
                                 "answer_format": "as_is", "fields": {"prompt": "problem", "answer": "answer"},
                                 "description": "pinned MATH-500"}
    config.validate(cfg)
    cfg["datasets"]["pinned"]["copies"] = 2
    with pytest.raises(config.ConfigError, match=r"unknown key 'datasets\.pinned\.copies'"):
        config.validate(cfg)
