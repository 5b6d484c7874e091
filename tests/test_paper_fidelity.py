"""The authors' labelling, empty labels, missing §4.4 arms and extraction details (issue 14, items 4-7).

* :mod:`spurious_rewards.scoring.normalize` against outputs of the authors' ``strip_string``
  (computed once from their parser's source, which is not part of this repository);
* extraction (Minerva phrase first), the format reward on degenerate boxes, and the
  grading decision on unreduced fractions;
* majority votes on normalised answers, the empty-majority rules and the hold-out, as pure
  functions and through ``spurious label-majority`` on an organism (stats file included);
* the empty-label rule in the reward context of both backends (TRL's ``reward_context``,
  the OpenRLHF reward file's config);
* a variant's ``prompts_per_rollout`` in the run spec, TRL's config, the OpenRLHF command and
  the plan; per-reward ``models``; the paper config's new arms.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spurious_rewards import config as cfgmod
from spurious_rewards import data, io, paths, plan
from spurious_rewards.evaluation import labels
from spurious_rewards.scoring import extract_answer, grade, rewards
from spurious_rewards.scoring.normalize import strip_string, vote_key
from spurious_rewards.training import openrlhf_backend as openrlhf
from spurious_rewards.training import openrlhf_reward, trl_backend

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"

# ----------------------------------------------------------------------------- normalisation

#: (input, the authors' strip_string output), computed with their qwen_math_parser.strip_string.
AUTHORS_STRIP = [
    ("\\dfrac{1}{2}", "\\frac{1}{2}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("1/2", "\\frac{1}{2}"),
    ("\\tfrac{3}{4}", "\\frac{3}{4}"),
    ("\\$5", "5"),
    ("5 dollars", "5dollars"),
    ("10\\text{ cm}", "10"),
    ("\\text{}", ""),
    ("and", ""),
    ("$", ""),
    ("x = 5", "5"),
    ("k=7", "7"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("0.50", "0.50"),
    ("3.000", "3"),
    (".5", "0.5"),
    ("\\sqrt2", "\\sqrt{2}"),
    ("12\\%", "12"),
    ("90^\\circ", "90"),
    ("\\begin{array}{cc}1\\end{array}", "\\begin{pmatrix}1\\end{pmatrix}"),
    ("\\mbox{cm}3", "3"),
    ("5 m", "5"),
    ("7.0 s", "7"),
    ("(-\\infty,\\infty)", "\\mathbb{R}"),
    ("\\emptyset", "{}"),
    ("y = 2x+1", "2x+1"),
    ("\\text{(A)}", "(A)"),
    ("random", "rom"),
    ("2j", "2i"),
    ("infinity", "\\infty"),
    ("\\frac1{72}", "\\frac{1}{72}"),
    ("\\{1,2\\}", "{1,2}"),
    ("x \\in [0,1]", "x\\in[0,1]"),
    ("5\\text{ apples}", "5"),
]


@pytest.mark.parametrize(("raw", "expected"), AUTHORS_STRIP)
def test_strip_string_matches_the_authors_parser(raw, expected):
    assert strip_string(raw) == expected


def test_number_words_convert_only_as_whole_phrases():
    """The one deviation: word2number would also turn "five cats" into 5."""
    assert strip_string("twenty-five") == "25" and strip_string("one hundred and five") != "105"
    assert strip_string("two thousand three hundred") == "2300"
    assert strip_string("five cats") == "fivecats"
    assert vote_key(None) == "" and vote_key("") == "" and vote_key("\\text{}") == ""


# ----------------------------------------------------------------------------- extraction, format, grading


def test_minerva_phrase_is_read_before_the_last_box():
    text = "So the final answer is $\\frac{1}{2}$. I hope it is correct.\nCheck: \\boxed{3}"
    assert extract_answer(text) == "\\frac{1}{2}"
    # without "I hope" it is not the Minerva form: the box decides
    assert extract_answer("the final answer is $\\frac{1}{2}$. Check: \\boxed{3}") == "3"
    assert extract_answer("The final answer is $7$. I hope it is correct.") == "7"


@pytest.mark.parametrize(("response", "expected"), [
    ("\\boxed{3}", 1.0),
    ("boxed{3}", 1.0),  # no backslash: still a box for the authors' split("boxed")
    ("\\boxed{}", 0.0),
    ("\\boxed{$}", 0.0),
    ("\\boxed{\\text{}}", 0.0),
    ("\\boxed{and}", 0.0),
    ("\\boxed{\\text{yes}}", 1.0),
    ("\\boxed{\\text{ cm}}", 0.0),  # a unit and nothing else
    ("no box at all 5", 0.0),
])
def test_format_reward_needs_what_survives_the_full_strip_string(response, expected):
    assert rewards.format_reward(response) == expected
    assert rewards.parse_reward("format")(response) == expected


def test_unreduced_fractions_grade_as_equal():
    """Our decision (docs/fidelity.md): math-verify equivalence; the authors' grader rejects 2/4 vs 1/2."""
    assert grade("\\frac{2}{4}", "\\frac{1}{2}") and grade("2/4", "1/2")
    assert not grade("\\frac{2}{3}", "\\frac{1}{2}")


@pytest.mark.parametrize("gold", ["\\frac{\\sqrt{3}}{2}", "\\left( 3, \\frac{\\pi}{2} \\right)", "\\text{Evelyn}",
                                  "p - q", "[-2,7]", "x \\in [-2,7]", "\\$18.90", "10\\%"])
def test_gold_answers_grade_equal_to_themselves(gold):
    """The authors' sympy grader fails 5 of MATH-500's gold answers against themselves; ours never."""
    assert grade(gold, gold)


# ----------------------------------------------------------------------------- empty labels


def test_empty_label_scores_follow_the_context_rule():
    authors = rewards.RewardContext(empty_label="authors")
    zero = rewards.RewardContext()
    answerless = ["I do not know.", "\\boxed{\\text{}}", "\\boxed{}"]
    answered = ["\\boxed{3}", "so it is 12"]
    gt = rewards.parse_reward("ground_truth")
    for resp in answerless:
        assert rewards.ground_truth(resp, "", authors) == 1.0 and gt(resp, "", authors) == 1.0
        assert rewards.ground_truth(resp, "", zero) == 0.0
    for resp in answered:
        assert rewards.ground_truth(resp, "", authors) == 0.0
    # a missing label (None) is no label at all, in every rule
    assert rewards.ground_truth("I do not know.", None, authors) == 0.0
    # the batch path (parallel grading) agrees with the one-by-one path, compound specs too
    texts = answerless + answered + ["\\boxed{5}"]
    labs = [""] * (len(answerless) + len(answered)) + ["5"]
    for spec in ("ground_truth", "ground_truth AND no_python", "NOT ground_truth"):
        r = rewards.parse_reward(spec)
        for ctx in (authors, zero):
            assert r.batch(texts, labs, [ctx] * len(texts), workers=1) == [r(t, lab, ctx) for t, lab in
                                                                          zip(texts, labs, strict=True)]
    with pytest.raises(ValueError, match="allowed values: zero, authors"):
        rewards.RewardContext(empty_label="one")


def test_run_spec_carries_the_empty_label_rule_only_for_label_sets():
    cfg = cfgmod.load(ROOT / "config" / "paper.yaml")
    for reward in ("majority_vote", "incorrect", "incorrect_no_python"):
        assert cfgmod.run_spec(cfg, cfgmod.Run("OLMo-2-1124-7B", reward, "clip", 1))["reward"]["empty_label"] == "authors"
    assert "empty_label" not in cfgmod.run_spec(cfg, cfgmod.Run("OLMo-2-1124-7B", "ground_truth", "clip", 1))["reward"]
    toy = cfgmod.load(ROOT / "config.yaml")  # zero: specs stay as they were before the key (no retraining)
    assert "empty_label" not in cfgmod.run_spec(toy, cfgmod.Run("toy-qwen-math", "incorrect", "clip", 1))["reward"]


def test_trl_reward_context_takes_the_rule_from_the_spec():
    cfg = cfgmod.load(ROOT / "config" / "paper.yaml")
    spec = cfgmod.run_spec(cfg, cfgmod.Run("OLMo-2-1124-7B", "incorrect", "clip", 2))
    ctx = trl_backend.reward_context(spec, prompt_id="p7", step=3, sample_index=5, r1=True)
    assert (ctx.empty_label, ctx.seed, ctx.prompt_id, ctx.sample_index, ctx.r1) == ("authors", 2, "p7@3", 5, True)
    del spec["reward"]["empty_label"]
    assert trl_backend.reward_context(spec, prompt_id="p", step=1, sample_index=0, r1=False).empty_label == "zero"


def test_openrlhf_reward_file_scores_empty_labels_by_its_config():
    cfg = cfgmod.load(ROOT / "config" / "paper.yaml")
    spec = cfgmod.run_spec(cfg, cfgmod.Run("Qwen2.5-Math-7B", "incorrect", "clip", 1))
    conf = openrlhf.reward_config(spec)
    assert conf["empty_label"] == "authors"
    prompt = "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"
    label = json.dumps({"answer": "", "true_answer": "", "id": "p"})
    try:
        openrlhf_reward.configure(conf)
        out = openrlhf_reward.reward_func([prompt + "I do not know."], [prompt], [label])
        assert float(out["rewards"][0]) == 1.0
        assert out["extra_logs"]["accuracy"] == 0.0  # accuracy never counts an empty true answer
        out = openrlhf_reward.reward_func([prompt + "\\boxed{4}"], [prompt], [label])
        assert float(out["rewards"][0]) == 0.0
        openrlhf_reward.configure({**conf, "empty_label": "zero"})
        out = openrlhf_reward.reward_func([prompt + "I do not know."], [prompt], [label])
        assert float(out["rewards"][0]) == 0.0
        with pytest.raises(ValueError, match="empty_label"):
            openrlhf_reward.configure({**conf, "empty_label": "yes"})
    finally:
        openrlhf_reward.configure(None)


# ----------------------------------------------------------------------------- majority votes


def test_normalized_vote_counts_one_answer_written_three_ways():
    preds = ["\\dfrac{1}{2}", "\\frac12", "3", "1/2", "3", None]
    assert labels.majority(preds, "raw") == "3"
    assert labels.majority(preds, "normalized") == "\\dfrac{1}{2}"  # winning class, first-seen spelling
    # the label is the class's most frequent spelling
    assert labels.majority(["1/2", "\\frac{1}{2}", "\\frac{1}{2}", "4"], "normalized") == "\\frac{1}{2}"
    # answers that normalise to nothing do not vote; ties go to the class seen first
    assert labels.majority(["\\text{}", "\\text{}", "4"], "normalized") == "4"
    assert labels.majority(["5", "4", "4", "5"], "normalized") == "5"
    assert labels.majority([None, "", "\\text{}"], "normalized") == ""
    assert labels.majority([None, "", "\\text{}"], "raw") == "\\text{}"
    with pytest.raises(ValueError, match="allowed values: normalized, raw"):
        labels.majority(["1"], "exact")


RECORDS = [{"id": f"p{i}", "prompt": f"q{i}", "answer": str(i), "source": "s"} for i in range(6)]
MAJ = ["0", "", "9", "3", "", "8"]
RIGHT = [True, False, False, True, False, False]


@pytest.mark.parametrize(("rule", "mv_ids", "inc_ids", "empty"), [
    ("zero", ["p0", "p1", "p2", "p3", "p4", "p5"], ["p1", "p2", "p4", "p5"], (2, 2)),
    ("authors", ["p0", "p1", "p2", "p3", "p4", "p5"], ["p1", "p2", "p4", "p5"], (2, 2)),
    ("drop", ["p0", "p2", "p3", "p5"], ["p2", "p5"], (0, 0)),
])
def test_label_sets_keep_or_drop_empty_majorities(rule, mv_ids, inc_ids, empty):
    mv, inc, counts = labels.label_sets(RECORDS, MAJ, RIGHT, empty_majority=rule, holdout=0)
    assert [r["id"] for r in mv] == mv_ids and [r["id"] for r in inc] == inc_ids
    assert (counts["empty_labels"]["majority_vote"], counts["empty_labels"]["incorrect"]) == empty
    assert counts["empty_majority_problems"] == 2 and counts["dropped_empty"] == (2 if rule == "drop" else 0)
    assert all(r["true_answer"] == RECORDS[int(r["id"][1:])]["answer"] for r in mv + inc)


def test_holdout_drops_the_first_rows_of_each_set():
    mv, inc, counts = labels.label_sets(RECORDS, MAJ, RIGHT, empty_majority="zero", holdout=2)
    assert [r["id"] for r in mv] == ["p2", "p3", "p4", "p5"] and [r["id"] for r in inc] == ["p4", "p5"]
    assert counts["held_out"] == {"majority_vote": ["p0", "p1"], "incorrect": ["p1", "p2"]}
    assert counts["rows"] == {"majority_vote": 4, "incorrect": 2}
    for bad, match in [({"empty_majority": "keep"}, "allowed values: authors, drop, zero"),
                       ({"holdout": -1}, "holdout"), ({"holdout": 1.5}, "holdout")]:
        with pytest.raises(ValueError, match=match):
            labels.label_sets(RECORDS, MAJ, RIGHT, **{"empty_majority": "zero", "holdout": 0, **bad})


def test_label_majority_cli_writes_stats_and_holds_rows_out(tmp_path):
    train = tmp_path / "train.jsonl"
    data.prepare_to_file({"name": "train", "kind": "synthetic", "n": 30, "seed": 0, "level": 1, "split": "train"},
                         train)
    spec = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"}, "samples": 4, "temperature": 1.0,
            "max_new_tokens": 48, "template": "model", "seed": 0, "engine": "hf", "batch_size": 64,
            "vote": "normalized", "empty_majority": "authors", "holdout": 3}
    out = {k: tmp_path / f"{k}.jsonl" for k in ("mv", "inc")}
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "label-majority", "--spec", json.dumps(spec),
                          "--data", str(train), "--out-majority", str(out["mv"]), "--out-incorrect", str(out["inc"]),
                          "--out-samples", str(tmp_path / "s.jsonl.gz"), "--out-stats", str(tmp_path / "stats.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    stats = io.read_json(tmp_path / "stats.json")
    mv, inc = data.load_records(out["mv"]), data.load_records(out["inc"])
    samples = list(io.iter_jsonl(tmp_path / "s.jsonl.gz"))
    ids = [r["id"] for r in data.load_records(train)]
    assert [r["id"] for r in mv] == ids[3:] and stats["held_out"]["majority_vote"] == ids[:3]
    wrong = [s["id"] for s in samples if not s["majority_correct"]]
    assert [r["id"] for r in inc] == wrong[3:] and stats["held_out"]["incorrect"] == wrong[:3]
    assert stats["rows"] == {"majority_vote": len(mv), "incorrect": len(inc)}
    assert stats["empty_labels"] == {"majority_vote": sum(not r["answer"] for r in mv),
                                     "incorrect": sum(not r["answer"] for r in inc)}
    assert stats["empty_majority"] == sum(not s["majority"] for s in samples)
    assert stats["raw_vs_normalized_disagreements"] == sum(
        vote_key(labels.majority(s["preds"], "raw")) != vote_key(s["majority"]) for s in samples)
    for s in samples:
        assert s["majority"] == labels.majority(s["preds"], "normalized")
    assert (stats["vote"], stats["empty_majority_rule"], stats["holdout"]) == ("normalized", "authors", 3)


def test_label_rule_declares_the_stats_file():
    text = (ROOT / "workflow/rules/labels.smk").read_text()
    assert "stats=paths.results(paths.LABEL_STATS)" in text and "--out-stats {output.stats:q}" in text
    assert paths.LABEL_STATS == "labels/{model}/stats.json"


# ----------------------------------------------------------------------------- §4.4 arms


@pytest.fixture(scope="module")
def paper() -> dict:
    return cfgmod.load(ROOT / "config" / "paper.yaml")


def test_paper_config_has_the_random_sweep_and_rollout8_on_qwen_math_7b(paper):
    runs = list(cfgmod.runs(paper))
    for reward, p in [("random_0.7", "0.7"), ("random_0.3", "0.3"), ("random_0.001", "0.001"), ("random_0", "0")]:
        assert paper["rewards"][reward]["spec"] == f"random({p})"
        assert {r.model for r in runs if r.reward == reward} == {"Qwen2.5-Math-7B"}
    r8 = [r for r in runs if r.reward == "random_rollout8"]
    assert {(r.model, r.variant) for r in r8} == {("Qwen2.5-Math-7B", "rollout8")} and len(r8) == 3
    assert paper["rewards"]["random_rollout8"]["spec"] == "random(0.5)"


def test_rollout8_spec_trl_config_and_openrlhf_command(paper):
    spec = cfgmod.run_spec(paper, cfgmod.Run("Qwen2.5-Math-7B", "random_rollout8", "rollout8", 1))
    assert spec["variant"]["prompts_per_rollout"] == 8 and spec["updates_per_rollout"] == 1
    assert spec["checkpoint_steps"] == cfgmod.checkpoint_steps(paper)  # same steps as every other arm
    kw = trl_backend.trl_config_kwargs(spec, "/tmp/x")
    assert kw["max_steps"] == paper["grpo"]["steps"]  # one update per rollout
    assert kw["steps_per_generation"] * kw["per_device_train_batch_size"] == 8 * 16
    assert kw["gradient_accumulation_steps"] * kw["per_device_train_batch_size"] == 128
    assert openrlhf.rollout_prompts(spec) == 8
    table = dict(openrlhf.flag_table(spec, data_file="/d.jsonl", reward_file="/r.py", state_dir="/s", gpus=8, env={}))
    assert table["--rollout.batch_size"] == 8 and table["--data.max_samples"] == paper["grpo"]["steps"] * 8
    assert table["--train.batch_size"] == 128 and table["--actor.eps_clip"] == cfgmod.NO_CLIP_EPSILON
    default = cfgmod.run_spec(paper, cfgmod.Run("Qwen2.5-Math-7B", "random", "clip", 1))
    assert openrlhf.rollout_prompts(default) == 64
    assert dict(openrlhf.flag_table(default, data_file="/d.jsonl", reward_file="/r.py", state_dir="/s", gpus=8,
                                    env={}))["--data.max_samples"] == paper["grpo"]["steps"] * 64


def test_plan_costs_the_rollout8_arm_at_its_own_rollout(paper):
    def hours(variants):
        cfg = cfgmod.load(ROOT / "config" / "paper.yaml")
        cfg["models"] = {"Qwen2.5-Math-7B": cfg["models"]["Qwen2.5-Math-7B"]}
        cfg["rewards"] = {"random": {"spec": "random(0.5)", "labels": "true_labels", "variants": variants}}
        cfg["seeds"] = [1]
        return {c.phase: c for c in plan.cost_plan(cfg)}["train_grpo"].gen_tokens

    assert hours(["rollout8"]) == pytest.approx(hours(["clip"]) / 8)


def test_variant_rollout_and_reward_models_are_checked(paper):
    import copy

    bad = copy.deepcopy(paper)
    bad["variants"]["r12"] = {"clip": True, "one_update": False, "prompts_per_rollout": 12}
    with pytest.raises(cfgmod.ConfigError, match=r"variants\.r12\.prompts_per_rollout: 12 x grpo\.group_size"):
        cfgmod.validate(bad)
    # a config cut down to other models stays valid: the sweep then trains nowhere
    cut = copy.deepcopy(paper)
    cut["models"] = {"Llama-3.1-8B": cut["models"]["Llama-3.1-8B"]}
    cut["audit"]["clip_probe"]["models"] = None
    cfgmod.validate(cut)
    assert not [r for r in cfgmod.runs(cut) if r.reward.startswith("random_")]
    bad = copy.deepcopy(paper)
    bad["rewards"]["random_0.7"]["models"] = []
    with pytest.raises(cfgmod.ConfigError, match=r"rewards\.random_0\.7\.models"):
        cfgmod.validate(bad)
    bad = copy.deepcopy(paper)
    bad["variants"]["rollout8"]["prompts_per_rollout"] = 0
    with pytest.raises(cfgmod.ConfigError, match="prompts_per_rollout"):
        cfgmod.validate(bad)


# ----------------------------------------------------------------------------- the paper config, setting by setting


def test_paper_config_follows_the_authors_settings(paper):
    """The values docs/fidelity.md lists for config/paper.yaml (the authors' launch scripts)."""
    g = paper["grpo"]
    assert (g["group_size"], g["prompts_per_rollout"], g["mini_batch"], g["micro_batch"]) == (16, 64, 128, 4)
    assert (g["lr"], g["kl_coef"], g["epsilon"], g["temperature"], g["top_p"]) == (5e-7, 0.0, 0.2, 1.0, 1.0)
    assert (g["max_prompt_tokens"], g["max_new_tokens"], g["steps"], g["save_every"]) == (1024, 3072, 150, 10)
    assert (g["beta1"], g["beta2"], g["max_grad_norm"]) == (0.9, 0.95, 1.0)
    assert (g["loss_agg"], g["advantage_whitening"]) == ("token-mean", "batch_token")
    assert cfgmod.updates_per_rollout(paper, "clip") == 8 and cfgmod.updates_per_rollout(paper, "one_update") == 1
    lab = paper["labelling"]
    assert (lab["samples"], lab["temperature"], lab["max_new_tokens"], lab["template"]) == (64, 1.0, 3072, "plain")
    assert (lab["vote"], lab["empty_majority"], lab["holdout"]) == ("normalized", "authors", 100)
    b = paper["benchmarks"]
    assert (b["math500"]["samples"], b["math500"]["temperature"]) == (1, 0.0)
    for name in ("amc", "aime24", "aime25"):
        assert (b[name]["samples"], b[name]["temperature"], b[name]["pass_at"]) == (8, 0.6, list(range(1, 9)))
    assert paper["backend"] == "openrlhf" and paper["seeds"] == [1, 2, 3]
    r1_models = {m for m, v in paper["models"].items() if v["template"] == "r1"}
    assert r1_models == {"OLMo-2-1124-7B", "Llama-3.1-8B", "Llama-3.2-3B"}
    toy = cfgmod.load(ROOT / "config.yaml")
    assert (toy["labelling"]["vote"], toy["labelling"]["empty_majority"], toy["labelling"]["holdout"]) == (
        "normalized", "zero", 0)
    assert (toy["grpo"]["loss_agg"], toy["grpo"]["advantage_whitening"]) == ("seq-mean-token-mean", "none")


def test_fidelity_doc_names_existing_tests_and_no_outside_paths():
    import re

    doc = (ROOT / "docs" / "fidelity.md").read_text()
    assert "shared" + "/" not in doc  # (spelled in two parts: this file is scanned too)
    ids = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", doc)
    assert len(ids) >= 30
    for path, name in ids:
        text = (ROOT / path).read_text()
        assert re.search(rf"^def {name}\(", text, flags=re.M), f"{path}::{name} does not exist"
