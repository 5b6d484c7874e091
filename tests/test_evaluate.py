"""Evaluation metrics, majority-vote labelling, and both CLIs on a shipped organism."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from spurious_rewards import data, io
from spurious_rewards.evaluation import evaluate, labels

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"


def test_pass_at_k_matches_enumeration():
    import itertools

    for n, c, k in [(8, 0, 1), (8, 3, 1), (8, 3, 4), (8, 8, 8), (5, 2, 3), (4, 1, 4)]:
        outcomes = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(range(n), k))
        expected = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
        assert math.isclose(evaluate.pass_at_k(n, c, k), expected)
    with pytest.raises(ValueError):
        evaluate.pass_at_k(2, 1, 3)


def test_summarize_avg_at_k_and_style_split():
    correct = [[True, False, True, True], [False, False, False, False]]
    code = [[True, True, False, False], [True, False, False, False]]
    rep = [[False] * 4, [True, False, False, False]]
    lengths = [[10, 20, 30, 40], [1, 1, 1, 1]]
    s = evaluate.summarize(correct, code, rep, lengths, [1, 4])
    assert s["accuracy"] == 3 / 8  # avg@4 = mean over all samples
    assert s["pass@1"] == 3 / 8
    assert s["pass@4"] == 0.5  # problem 1 solved in some sample, problem 2 never
    assert s["code_frequency"] == 3 / 8
    assert s["accuracy_code"] == 1 / 3 and s["accuracy_language"] == 2 / 5
    assert s["repetition_rate"] == 1 / 8 and s["mean_length"] == 13.0


def test_majority_ignores_empty_and_breaks_ties_by_first_seen():
    assert labels.majority(["3", None, "", "4", "4", "3"]) == "3"
    assert labels.majority(["5", "4", "4"]) == "4"
    assert labels.majority([None, ""]) == ""


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("d")
    train = d / "train.jsonl"
    test = d / "test.jsonl"
    data.prepare_to_file({"name": "train", "kind": "synthetic", "n": 40, "seed": 0, "level": 1, "split": "train"},
                         train)
    data.prepare_to_file({"name": "test", "kind": "synthetic", "n": 30, "seed": 0, "level": 1, "split": "test"}, test)
    return train, test


@pytest.mark.slow
def test_label_majority_cli(tmp_path, small_data):
    train, _ = small_data
    spec = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"}, "samples": 6, "temperature": 1.0,
            "max_new_tokens": 48, "template": "model", "seed": 0, "engine": "hf", "batch_size": 64}
    out = {k: tmp_path / f"{k}.jsonl" for k in ("mv", "inc")}
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "label-majority", "--spec", json.dumps(spec),
                          "--data", str(train), "--out-majority", str(out["mv"]), "--out-incorrect", str(out["inc"]),
                          "--out-samples", str(tmp_path / "s.jsonl.gz")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    mv = data.load_records(out["mv"])
    inc = data.load_records(out["inc"])
    truth = {r["id"]: r["answer"] for r in data.load_records(train)}
    assert len(mv) == 40 and 0 < len(inc) < 40
    samples = {r["id"]: r for r in io.iter_jsonl(tmp_path / "s.jsonl.gz")}
    for rec in inc:
        assert rec["answer"] == samples[rec["id"]]["majority"] and not samples[rec["id"]]["majority_correct"]
        assert rec["true_answer"] == truth[rec["id"]]
    for rec in mv:
        s = samples[rec["id"]]
        assert len(s["preds"]) == 6 and rec["answer"] == labels.majority(s["preds"])


@pytest.mark.slow
def test_evaluate_cli_base_model(tmp_path, small_data):
    _, test = small_data
    spec = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"},
            "evaluation": {"engine": "hf", "max_new_tokens": 48, "batch_size": 16, "seed": 0, "threads": 1,
                           "grading_workers": 1},
            "benchmarks": {"g": {"dataset": "t", "samples": 1, "temperature": 0.0, "top_p": 1.0, "pass_at": [1],
                                 "data": str(test)},
                           "s": {"dataset": "t", "samples": 3, "temperature": 1.0, "top_p": 1.0, "pass_at": [1, 3],
                                 "data": str(test)}}}
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "evaluate", "--spec", json.dumps(spec),
                          "--model-dir", str(ORGANISM), "--out-summary", str(tmp_path / "summary.json"),
                          "--out-samples", str(tmp_path / "samples")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = io.read_json(tmp_path / "summary.json")
    by = {r["benchmark"]: r for r in summary["results"]}
    assert by["g"]["samples"] == 30 and by["s"]["samples"] == 90 and by["s"]["pass@3"] >= by["s"]["pass@1"]
    rows = list(io.iter_jsonl(tmp_path / "samples/step0_s.jsonl.gz"))
    assert len(rows) == 90
    assert set(rows[0]) == {"id", "i", "response", "pred", "correct", "code", "repetition", "tokens"}
    assert sum(r["correct"] for r in rows) / 90 == pytest.approx(by["s"]["accuracy"])


# ----------------------------------------------------------------------------- labelling errors


LABEL_SPEC = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"}, "samples": 2, "temperature": 0.0,
              "max_new_tokens": 48, "template": "model", "seed": 0, "engine": "hf", "batch_size": 64}


def _label(tmp_path: Path, data_path: Path, **over) -> dict:
    return labels.label_majority({**LABEL_SPEC, **over}, data_path=data_path, out_majority=tmp_path / "mv.jsonl",
                                 out_incorrect=tmp_path / "inc.jsonl", out_samples=tmp_path / "s.jsonl.gz")


@pytest.mark.slow
def test_labelling_all_right_is_a_data_error_naming_the_file(tmp_path, small_data):
    """When the (greedy) majority is right on every problem, the incorrect set would be empty: a DataError."""
    train, _ = small_data
    _label(tmp_path, train)  # greedy: the majority is the model's one answer, the same in any batch
    right = {r["id"] for r in io.iter_jsonl(tmp_path / "s.jsonl.gz") if r["majority_correct"]}
    assert right, "the organism should answer some problems right"
    subset = tmp_path / "right.jsonl"
    io.write_jsonl([r for r in data.load_records(train) if r["id"] in right], subset)
    with pytest.raises(io.DataError, match="majority answer is right on all") as exc:
        _label(tmp_path / "again", subset)
    assert exc.value.file == str(subset)
    assert not (tmp_path / "again").exists()  # nothing was written


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"id": "a", "prompt": "p", "answer": "1", "source": "s"}\n{"id": "b", "prompt": \n', r":2: .*JSON"),
        ('{"id": "a", "prompt": "p", "source": "s"}\n', "answer"),
        ("", "empty"),
    ],
)
def test_bad_labelling_file_is_a_data_error(tmp_path, content, pattern):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    with pytest.raises(io.DataError, match=pattern) as exc:
        _label(tmp_path, bad)
    assert exc.value.file == str(bad)


def test_bad_labelling_template_names_the_allowed_values(tmp_path, small_data):
    with pytest.raises(ValueError, match="allowed values: model, plain"):
        _label(tmp_path, small_data[0], template="chat")
