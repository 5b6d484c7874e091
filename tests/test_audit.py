"""The audit (issue: "is the gain real?"): partial-prompt contamination scoring, the verdict rule,
prompt-robust baselines and the clipping-bias probe, on crafted cases with known answers and on
the shipped toy organism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import bench_file, probe_spec
from hostile_corpus import hostile_corpus

from spurious_rewards import io, stats
from spurious_rewards.audit import clip_probe, contamination
from spurious_rewards.evaluation import evaluate
from spurious_rewards.stats import CI

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"
CLI = [sys.executable, "-m", "spurious_rewards.cli"]


# ----------------------------------------------------------------------------- partial prompts


@pytest.mark.parametrize(
    ("text", "fraction", "prefix", "rest"),
    [
        # 60% of 30 characters = 18, moved back to the space before "pieces"
        ("Cut a cake into eight pieces.", 0.6, "Cut a cake into", " eight pieces."),
        ("What is 12+30?", 0.6, "What is", " 12+30?"),
        # no whitespace before the cut: cut mid-word
        ("abcdefghij", 0.6, "abcdef", "ghij"),
        ("a b", 0.5, "a", " b"),
        # a cut exactly at a space keeps the space in the rest
        ("aaaa bbbb", 0.45, "aaaa", " bbbb"),
    ],
)
def test_split_problem_at_word_boundary(text, fraction, prefix, rest):
    p, r = contamination.split_problem(text, fraction)
    assert (p, r) == (prefix, rest)
    assert p + r == text


def test_split_problem_rejects_bad_fraction():
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            contamination.split_problem("x y", bad)


def test_scoring_a_copy_is_perfect_and_a_stranger_scores_zero():
    rest = " eight pieces of size $\\frac{1}{8}$ each."
    copy = contamination.score_continuation(rest, rest + "\nThe answer is $\\boxed{8}$.")
    assert copy == {"exact": True, "rouge_l": 1.0}
    # whitespace differences do not matter
    assert contamination.score_continuation(rest, "  eight   pieces of size $\\frac{1}{8}$\n each.")["exact"]
    other = contamination.score_continuation(rest, " zebra")
    assert other == {"exact": False, "rouge_l": 0.0}
    # half right: ROUGE-L in between, not an exact match
    half = contamination.score_continuation(" 1 2 3 4", " 1 2 9 9")
    assert not half["exact"] and half["rouge_l"] == pytest.approx(0.5)
    # symbols count as tokens (rouge-score's default tokenizer would drop them)
    assert contamination.score_continuation(" 3+4", " 3-4")["rouge_l"] == pytest.approx(2 / 3)


class _Oracle:
    """A 'model' that has memorized the benchmark: it completes each prefix with the true rest and answer."""

    def __init__(self, records: list[dict], memorized: bool) -> None:
        self.by_prefix = {}
        for r in records:
            prefix, rest = contamination.split_problem(r["prompt"], 0.6)
            self.by_prefix[prefix] = f"{rest} Solution: $\\boxed{{{r['answer']}}}$" if memorized else " Unknown"
        self.tokenizer = None

    def generate(self, prompts, n, temperature, max_new_tokens, seed, **kw):
        assert temperature == 0.0 and n == 1
        return [[self.by_prefix[p]] for p in prompts]


@pytest.fixture()
def problems(tmp_path) -> Path:
    recs = [
        {"id": "p1", "prompt": "Find the sum of all the positive divisors of twelve.", "answer": "28", "source": "t"},
        {"id": "p2", "prompt": "What is the value of 17 times 3 minus 5?", "answer": "46", "source": "t"},
        {"id": "p3", "prompt": "How many primes are there below twenty?", "answer": "8", "source": "t"},
    ]
    path = tmp_path / "bench.jsonl"
    io.write_jsonl(recs, path)
    return path


def _contamination_spec(path: Path) -> dict:
    return {"model": {"name": "oracle"}, "datasets": {"bench": str(path)},
            "contamination": {"fraction": 0.6, "max_new_tokens": 64, "limit": None},
            "evaluation": {"engine": "hf", "batch_size": 8, "seed": 0, "threads": 1, "grading_workers": 1}}


@pytest.mark.parametrize("memorized", [True, False])
def test_audit_scores_a_memorizing_model_100_and_a_clean_one_0(tmp_path, problems, memorized):
    engine = _Oracle(list(io.iter_jsonl(problems)), memorized)
    out = contamination.audit(_contamination_spec(problems), model_dir="unused", engine=engine,
                              out_summary=tmp_path / "s.json", out_samples=tmp_path / "samples")
    (res,) = out["results"]
    want = 1.0 if memorized else 0.0
    assert res["problems"] == 3
    for key in ("exact", "rouge_l", "correct"):
        assert res[key]["mean"] == want, key
    rows = list(io.iter_jsonl(tmp_path / "samples" / "bench.jsonl.gz"))
    assert [r["exact"] for r in rows] == [memorized] * 3
    assert json.loads((tmp_path / "s.json").read_text())["provenance"]["config_hash"]


@pytest.mark.slow
def test_audit_cli_on_the_toy_organism_is_the_control(tmp_path):
    """The organisms never saw a test problem: the real model regenerates none of them."""
    from spurious_rewards.data import synthetic

    path = tmp_path / "clean.jsonl"
    io.write_jsonl([p.record("arith") for p in synthetic.generate(12, 5, split="test")], path)
    spec = _contamination_spec(path)
    spec["model"] = {"name": "toy-qwen-math", "path": str(ORGANISM), "template": "chat"}
    spec["contamination"]["max_new_tokens"] = 24
    res = subprocess.run([*CLI, "audit-contamination", "--spec", json.dumps(spec), "--model-dir", str(ORGANISM),
                          "--out-summary", str(tmp_path / "s.json"), "--out-samples", str(tmp_path / "samples")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = io.read_json(tmp_path / "s.json")["results"]
    assert row["problems"] == 12 and row["exact"]["mean"] == 0.0
    assert 0.0 <= row["rouge_l"]["mean"] < 0.5


# ----------------------------------------------------------------------------- the verdict rule


def ci(lo: float, hi: float) -> CI:
    return CI((lo + hi) / 2, lo, hi)


@pytest.mark.parametrize(
    ("paper", "best", "clean", "label", "why"),
    [
        (ci(0.05, 0.10), ci(0.02, 0.06), ci(0.01, 0.04), "gain", "best baseline and on clean"),
        (ci(0.05, 0.10), ci(-0.02, 0.03), ci(0.01, 0.04), "no clear gain", "vanishes against the best prompt"),
        (ci(0.05, 0.10), ci(0.02, 0.06), ci(-0.01, 0.02), "no clear gain", "no gain on clean data"),
        (ci(-0.01, 0.02), ci(-0.03, 0.01), ci(-0.02, 0.03), "no clear gain", "CI includes 0"),
        (ci(-0.10, -0.02), ci(-0.12, -0.04), ci(-0.01, 0.02), "loss", "paper baseline"),
        (ci(0.01, 0.05), ci(-0.02, 0.01), ci(-0.06, -0.01), "loss", "clean data"),
        # a model that beats a weak prompt but loses to the best one is no gain, not a loss
        (ci(0.02, 0.05), ci(-0.08, -0.03), ci(-0.01, 0.01), "no clear gain", "vanishes"),
        # no baselines and no clean benchmark: judged on the paper baseline alone
        (ci(0.01, 0.05), None, None, "gain", "best baseline"),
        (None, None, None, "no clear gain", "no gains measured"),
    ],
)
def test_verdict_rule_on_synthetic_cis(paper, best, clean, label, why):
    got, reason = stats.verdict(paper, best, clean)
    assert got == label
    assert why in reason


def test_verdict_row_pairs_problems_and_pools_clean_levels():
    from spurious_rewards.analysis import audit_tables as audit

    rng = np.random.default_rng(0)
    base = {"main": rng.random(50).round(), "l1": np.zeros(40), "l2": np.zeros(30)}
    best = {"main": ("boxed", np.clip(base["main"] + 0.5, 0, 1))}
    up = lambda b: np.stack([np.clip(b + 0.3, 0, 1)] * 3)  # noqa: E731
    seeds = {s: {"main": ([10, 20], np.stack([base["main"], np.clip(base["main"] + 0.3, 0, 1)]), None),
                 "l1": ([20], up(base["l1"])[:1], None), "l2": ([20], up(base["l2"])[:1], None)} for s in (1, 2, 3)}
    keys = {"model": "m", "family": "f", "reward": "r", "variant": "clip"}
    row = audit.verdict_row(keys, seeds, base, best, "main", ["l1", "l2"], 400, 0, 0.05)
    assert row["step"] == 20 and row["n_seeds"] == 3 and row["clean_problems"] == 70
    assert row["gain_clean"] == pytest.approx(0.3)
    assert row["gain_paper"] > 0 and row["gain_best"] < row["gain_paper"]
    assert row["best_template"] == "boxed"
    assert row["verdict"] in stats.VERDICTS


# ----------------------------------------------------------------------------- baselines


@pytest.mark.slow
def test_baselines_every_template_and_chat_equals_the_base_evaluation(tmp_path):
    bench, train = bench_file(tmp_path), bench_file(tmp_path, 10, 4)
    model = {"name": "toy", "path": str(ORGANISM), "template": "chat"}
    ev = {"engine": "hf", "batch_size": 16, "seed": 0, "threads": 1, "grading_workers": 1, "max_new_tokens": 24}
    b = {"samples": 2, "temperature": 1.0, "top_p": 1.0, "pass_at": [1], "data": str(bench)}
    spec = {"model": model, "benchmarks": {"arith": b}, "evaluation": ev,
            "baselines": {"templates": ["chat", "plain", "boxed", "r1", "few_shot"], "shots": 2, "seed": 0,
                          "shots_data": str(train)}}
    res = subprocess.run([*CLI, "evaluate-baselines", "--spec", json.dumps(spec), "--model-dir", str(ORGANISM),
                          "--out-summary", str(tmp_path / "b.json"), "--out-samples", str(tmp_path / "bs")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = io.read_json(tmp_path / "b.json")
    assert [r["template"] for r in doc["results"]] == ["chat", "plain", "boxed", "r1", "few_shot"]
    assert all(r["available"] for r in doc["results"])
    assert len(doc["few_shot_examples"]) == 2
    for t in ("chat", "plain", "boxed", "r1", "few_shot"):
        assert (tmp_path / "bs" / t / "step0_arith.jsonl.gz").is_file()
    # the chat baseline is the paper-style base evaluation, sample for sample
    base = evaluate.evaluate({"model": model, "benchmarks": {"arith": b}, "evaluation": ev}, model_dir=str(ORGANISM),
                             out_summary=tmp_path / "e.json", out_samples=tmp_path / "es")
    chat = next(r for r in doc["results"] if r["template"] == "chat")
    assert chat["accuracy"] == base["results"][0]["accuracy"]
    assert list(io.iter_jsonl(tmp_path / "bs/chat/step0_arith.jsonl.gz")) == \
        list(io.iter_jsonl(tmp_path / "es/step0_arith.jsonl.gz"))


def test_baselines_without_chat_template_report_it_unavailable(tmp_path):
    import shutil

    model_dir = tmp_path / "nochat"
    shutil.copytree(ORGANISM, model_dir)
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (model_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    bench = bench_file(tmp_path, 4)
    spec = {"model": {"name": "nochat", "template": "plain"},
            "benchmarks": {"arith": {"samples": 1, "temperature": 0.0, "top_p": 1.0, "pass_at": [1], "data": str(bench)}},
            "evaluation": {"engine": "hf", "batch_size": 8, "seed": 0, "threads": 1, "grading_workers": 1,
                           "max_new_tokens": 8},
            "baselines": {"templates": ["chat", "boxed", "plain"], "shots": 1, "seed": 0, "shots_data": str(bench)}}
    doc = evaluate.evaluate_baselines(spec, model_dir=str(model_dir), out_summary=tmp_path / "b.json",
                                      out_samples=tmp_path / "bs")
    avail = {r["template"]: r["available"] for r in doc["results"]}
    assert avail == {"chat": False, "boxed": True, "plain": True}
    assert not (tmp_path / "bs" / "chat" / "step0_arith.jsonl.gz").exists()


# ----------------------------------------------------------------------------- the clipping-bias probe


def _probe_spec(tmp_path: Path, variants: dict, *, draws: int = 2, lr: float = 1e-4) -> dict:
    return probe_spec(tmp_path, variants, draws=draws, lr=lr, micro_batch=None)


def test_one_update_probe_clip_equals_no_clip_exactly(tmp_path):
    """With one update per rollout the ratio is 1: clipping cannot act, so both drifts are identical."""
    spec = _probe_spec(tmp_path, {"clip1": {"clip": True, "one_update": True},
                                  "noclip1": {"clip": False, "one_update": True}}, lr=1e-2)
    out = clip_probe.probe(spec, model_dir=ORGANISM, out=tmp_path / "p.json")
    by = {(r["draw"], r["variant"]): r for r in out["draws"]}
    for k in range(2):
        a, b = by[(k, "clip1")], by[(k, "noclip1")]
        for m in ("d_p_code", "d_p_dominant", "d_code_frequency", "d_accuracy"):
            assert a[m] == b[m], (k, m)
        assert a["clip_fraction"] == b["clip_fraction"] == 0.0
        assert a["updates"] == 1
    # the step did move the model (the equality is not two no-ops)
    assert any(r["d_p_code"] != 0.0 for r in out["draws"])


def test_probe_clips_only_with_several_updates_and_is_deterministic(tmp_path):
    variants = {"clip": {"clip": True, "one_update": False}, "no_clip": {"clip": False, "one_update": False}}
    spec = _probe_spec(tmp_path, variants, lr=1e-2)
    a = clip_probe.probe(spec, model_dir=ORGANISM, out=tmp_path / "a.json")
    clip = [r for r in a["draws"] if r["variant"] == "clip"]
    noclip = [r for r in a["draws"] if r["variant"] == "no_clip"]
    assert all(r["updates"] == 4 for r in a["draws"])  # 4 prompts x 4 samples / mini-batch 4
    assert sum(r["clip_fraction"] for r in clip) > 0 and all(r["clip_fraction"] == 0 for r in noclip)
    assert [r["d_p_code"] for r in clip] != [r["d_p_code"] for r in noclip]
    summ = {(r["variant"], r["metric"]) for r in a["summary"]}
    assert ("clip - no_clip", "d_p_dominant") in summ
    b = clip_probe.probe(spec, model_dir=ORGANISM, out=tmp_path / "b.json")
    assert a["draws"] == b["draws"]  # same seed, same numbers


def test_grpo_loss_matches_its_definition():
    import torch

    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.2, -9.0]])
    old = torch.tensor([[-1.5, -2.0, -0.1], [-0.3, -0.9, -9.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    loss, frac = clip_probe.grpo_loss(logps, old, adv, mask, 0.2)
    # by hand: per token -min(r A, clip(r) A), token mean per sequence, mean over sequences
    r = np.exp(np.array([[0.5, 0.0, -0.4], [0.0, 0.7, 0.0]]))
    a = np.array([[1.0], [-2.0]])
    per = -np.minimum(r * a, np.clip(r, 0.8, 1.2) * a)
    want = ((per[0].sum() / 3) + (per[1, :2].sum() / 2)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)
    # clipped: token (0,0) r=1.65 > 1.2 with A>0; token (1,1) r=2.01 > 1.2 with A<0 is NOT clipped (min picks r A)
    assert frac == pytest.approx(1 / 5)
    # clip-higher (DAPO): upper bound 1 + 0.7 leaves token (0,0) (r = 1.65) unclipped
    loss_hi, frac_hi = clip_probe.grpo_loss(logps, old, adv, mask, 0.2, epsilon_high=0.7)
    per_hi = -np.minimum(r * a, np.clip(r, 0.8, 1.7) * a)
    assert float(loss_hi) == pytest.approx(((per_hi[0].sum() / 3) + (per_hi[1, :2].sum() / 2)) / 2, rel=1e-6)
    assert frac_hi == 0.0 and float(loss_hi) < float(loss)
    adv_g = clip_probe.group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)
    assert torch.allclose(adv_g, torch.tensor([0.7071, -0.7071, 0.0, 0.0]), atol=1e-3)


def test_every_audit_and_evaluation_output_has_provenance(tmp_path):
    """Config (spec) hash, git commit, package versions and seed in every file the audit and evaluation write."""
    from spurious_rewards import provenance

    bench, train = bench_file(tmp_path, 3), bench_file(tmp_path, 6, 4)
    model = {"name": "toy", "path": str(ORGANISM), "template": "chat"}
    ev = {"engine": "hf", "batch_size": 8, "seed": 5, "threads": 1, "grading_workers": 1, "max_new_tokens": 8}
    b = {"samples": 1, "temperature": 0.0, "top_p": 1.0, "pass_at": [1], "data": str(bench)}
    spec = {"model": model, "benchmarks": {"arith": b}, "evaluation": ev}
    evaluate.evaluate(spec, model_dir=str(ORGANISM), out_summary=tmp_path / "e.json", out_samples=tmp_path / "es")
    bspec = {**spec, "baselines": {"templates": ["plain"], "shots": 1, "seed": 0, "shots_data": str(train)}}
    evaluate.evaluate_baselines(bspec, model_dir=str(ORGANISM), out_summary=tmp_path / "b.json",
                                out_samples=tmp_path / "bs")
    cspec = {**_contamination_spec(bench), "model": model, "evaluation": ev}
    contamination.audit(cspec, model_dir=str(ORGANISM), out_summary=tmp_path / "c.json", out_samples=tmp_path / "cs")
    pspec = _probe_spec(tmp_path, {"one_update": {"clip": True, "one_update": True}})
    pspec["probe"]["draws"] = 2
    clip_probe.probe(pspec, model_dir=ORGANISM, out=tmp_path / "p.json")
    records = {
        "eval summary": (io.read_json(tmp_path / "e.json")["provenance"], spec, 5),
        "eval samples": (provenance.read_sidecar(tmp_path / "es"), spec, 5),
        "baselines summary": (io.read_json(tmp_path / "b.json")["provenance"], bspec, 5),
        "baselines samples": (provenance.read_sidecar(tmp_path / "bs"), bspec, 5),
        "contamination summary": (io.read_json(tmp_path / "c.json")["provenance"], cspec, 5),
        "contamination samples": (provenance.read_sidecar(tmp_path / "cs"), cspec, 5),
        "clip probe": (io.read_json(tmp_path / "p.json")["provenance"], pspec, 0),
    }
    for what, (rec, sp, seed) in records.items():
        assert rec is not None, what
        assert rec["config_hash"] == provenance.spec_hash(sp), what
        assert rec["seed"] == seed, what
        assert rec["git_commit"] and rec["packages"]["torch"] and rec["packages"]["transformers"], what


@pytest.mark.slow
def test_contamination_scoring_survives_the_hostile_corpus():
    """10,000 hostile continuations (MB-long, NULs, surrogates, nesting, injections): bool / [0, 1], never raises."""
    corpus = hostile_corpus()
    rest = " 12+30 and \\frac{1}{2}?"
    for text in corpus:
        r = contamination.score_continuation(rest, text)
        assert isinstance(r["exact"], bool) and 0.0 <= r["rouge_l"] <= 1.0
        prefix, remainder = contamination.split_problem(text, 0.6) if len(text) > 1 else (text, "")
        assert prefix + remainder == text
        # a hostile *problem* is scored too (its rest against itself is a perfect copy)
        if remainder.strip():
            assert contamination.score_continuation(remainder, remainder)["exact"]


# ----------------------------------------------------------------------------- placeholder prompts, worked shots


@pytest.mark.slow
def test_the_baseline_rule_runs_the_placeholder_prompts_and_shows_worked_shots(workdir):
    """evaluate_baselines in a real DAG: lipsum and lorem evaluated on an organism; few_shot draws solved examples."""
    from conftest import run_snakemake, tiny_study

    from spurious_rewards import templates

    cfg = tiny_study(("toy-qwen-math",), audit=True)
    cfg["datasets"]["arith_test"]["n"] = 6
    cfg["evaluation"]["max_new_tokens"] = 16
    cfg["audit"]["baselines"] = {"templates": ["chat", "few_shot", "lipsum", "lorem"], "shots": 2}
    wd = workdir(cfg)
    target = "results/audit/baselines/toy-qwen-math/summary.json"
    res = run_snakemake(wd, "--cores", "1", target, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = io.read_json(wd / target)
    assert [r["template"] for r in doc["results"]] == ["chat", "few_shot", "lipsum", "lorem"]
    assert all(r["available"] and r["problems"] == 6 for r in doc["results"])
    # the training set is generated with solutions: the shots show how, not only what
    assert doc["few_shot_shows"] == evaluate.FEW_SHOT_WORKED
    assert all(ex["solution"].endswith(f"\\boxed{{{ex['answer']}}}.") for ex in doc["few_shot_examples"])
    log = (wd / "logs/evaluate_baselines/toy-qwen-math.log").read_text()
    assert "showing worked solutions" in log
    for t in ("lipsum", "lorem"):
        rows = list(io.iter_jsonl(wd / f"results/audit/baselines/toy-qwen-math/samples/{t}/step0_arith.jsonl.gz"))
        assert len(rows) == 6
    # what the model saw: the filler inside its chat template, then the problem
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ORGANISM)
    prompt = templates.render_prompt(tok, "lipsum", "What is 1+1?")
    assert prompt.startswith("<|im_start|>user\nLorem ipsum dolor sit amet, consectetuer")


def test_few_shot_draws_solved_examples_only_when_there_are_enough(tmp_path):
    from spurious_rewards.data import synthetic

    probs = synthetic.generate(10, 4)
    mixed = tmp_path / "mixed.jsonl"
    io.write_jsonl([p.record("arith", solution=i < 3) for i, p in enumerate(probs)], mixed)
    ex, shows = evaluate.few_shot_examples(mixed, 3, 0)
    assert shows == evaluate.FEW_SHOT_WORKED and all("solution" in e for e in ex)
    assert {e["id"] for e in ex} == {p.id for p in probs[:3]}
    # four shots but three solved records: answers only, and no example smuggles its solution in
    ex, shows = evaluate.few_shot_examples(mixed, 4, 0)
    assert shows == evaluate.FEW_SHOT_ANSWERS and not any("solution" in e for e in ex)
    # a set without solutions draws exactly as it always did
    plain = tmp_path / "plain.jsonl"
    io.write_jsonl([p.record("arith") for p in probs], plain)
    import random

    from spurious_rewards import data

    assert evaluate.few_shot_examples(plain, 4, 0) == (random.Random(0).sample(data.load_records(plain), 4),
                                                       evaluate.FEW_SHOT_ANSWERS)


def test_the_best_baseline_considers_the_placeholder_prompts(tmp_path):
    """A placeholder prompt that beats every other template becomes the best baseline the verdict uses."""
    import pandas as pd
    from conftest import N_PROBLEMS, build_tree, make_config, write_audit

    from spurious_rewards.analysis import aggregate

    cfg = make_config()
    assert "lipsum" in cfg["audit"]["baselines"]["templates"]  # in the default study's list
    build_tree(tmp_path, cfg)
    write_audit(tmp_path, cfg, np.random.default_rng(1))
    d = tmp_path / "audit" / "baselines" / "toy-qwen-math"
    io.write_jsonl(({"id": f"arith/{i}", "i": 0, "response": "r", "pred": "7", "correct": True, "code": False,
                     "repetition": False, "tokens": 5} for i in range(N_PROBLEMS)),
                   d / "samples" / "lipsum" / "step0_arith.jsonl.gz")
    doc = io.read_json(d / "summary.json")
    doc["results"].append({"template": "lipsum", "benchmark": "arith", "available": True, "accuracy": 1.0,
                           "code_frequency": 0.0})
    io.write_json(doc, d / "summary.json")
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=200)
    base = pd.read_csv(paths["baselines"])
    best = base[(base["model"] == "toy-qwen-math") & base["best"].fillna(False).astype(bool)]
    assert list(best["template"]) == ["lipsum"] and float(best["accuracy"].iloc[0]) == 1.0
    ver = pd.read_csv(paths["verdict"])
    qwen = ver[ver["model"] == "toy-qwen-math"]
    assert set(qwen["best_template"]) == {"lipsum"} and (qwen["best_accuracy"] == 1.0).all()
    # the other model has no lipsum result: its best is one of its own candidates
    assert "lipsum" not in set(ver[ver["model"] == "toy-nocode"]["best_template"].dropna())
    assert "| Model | Benchmark | chat | plain | boxed | r1 | few_shot | lipsum |" in paths["summary"].read_text()


def test_baselines_take_their_own_sample_count_at_most_the_benchmarks():
    from spurious_rewards import config as cfgmod

    cfg = cfgmod.load(ROOT / "config.yaml")
    assert cfg["audit"]["baselines"]["samples"] == 1 and cfg["benchmarks"]["arith"]["samples"] == 4
    b = cfgmod.baseline_benchmark(cfg, "arith")
    assert (b["samples"], b["pass_at"], b["temperature"]) == (1, [1], 1.0)
    cfg["audit"]["baselines"]["samples"] = 9  # never more than the benchmark's own
    assert cfgmod.baseline_benchmark(cfg, "arith") == cfg["benchmarks"]["arith"]
    cfg["audit"]["baselines"]["samples"] = None
    assert cfgmod.baseline_benchmark(cfg, "arith") == cfg["benchmarks"]["arith"]
