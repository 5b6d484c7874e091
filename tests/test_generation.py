"""The generation interface: batch-size-independent greedy, seeded sampling, stop strings, lazy vLLM."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest

from spurious_rewards import generation as gen
from spurious_rewards.data import synthetic
from spurious_rewards.templates import render_prompt

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


# ----------------------------------------------------------------------------- vLLM, without vLLM


def test_vllm_is_not_imported_eagerly() -> None:
    assert "vllm" not in sys.modules


def _fake_vllm(calls: dict) -> types.ModuleType:
    """A stand-in with vLLM's public surface (LLM, SamplingParams, RequestOutput-like results)."""
    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)

    class SamplingParams:
        def __init__(self, **kwargs: object) -> None:
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs: object) -> None:
            calls["llm"] = kwargs

        def get_tokenizer(self) -> str:
            return "tok"

        def generate(self, prompts: list[str], params: list[SamplingParams], use_tqdm: bool = True) -> list:
            calls["generate"] = (prompts, params, use_tqdm)
            return [
                types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(text=f"{p}#{i}") for i in range(sp.kwargs["n"])]
                )
                for p, sp in zip(prompts, params, strict=True)
            ]

    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    return mod


def test_vllm_engine_maps_to_sampling_params(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm(calls))
    eng = gen.make_engine("/models/m", engine="vllm", seed=5, progress=False, enforce_eager=True)
    assert isinstance(eng, gen.VLLMEngine)
    assert (
        calls["llm"]["model"] == "/models/m" and calls["llm"]["seed"] == 5 and calls["llm"]["enforce_eager"]
    )
    out = eng.generate(
        ["p", "q"], n=2, temperature=0.6, top_p=0.9, max_new_tokens=7, seed=10, stop=["</answer>"]
    )
    assert out == [["p#0", "p#1"], ["q#0", "q#1"]]
    prompts, params, use_tqdm = calls["generate"]
    assert prompts == ["p", "q"] and use_tqdm is False
    assert params[0].kwargs == {
        "n": 2,
        "temperature": 0.6,
        "top_p": 0.9,
        "max_tokens": 7,
        "seed": 10,
        "stop": ["</answer>"],
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
    }
    assert params[1].kwargs["seed"] == 11  # independent draws for repeated prompts


def test_auto_engine_needs_vllm_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert not gen.vllm_available() or torch.cuda.is_available()
    monkeypatch.setitem(sys.modules, "vllm", _fake_vllm({}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not gen.vllm_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gen.vllm_available()
    assert isinstance(gen.make_engine("/m", engine="auto", progress=False), gen.VLLMEngine)


def test_auto_engine_falls_back_to_hf(engine: gen.HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "vllm_available", lambda: False)
    eng = gen.make_engine(engine.model_dir, engine="auto", threads=2, batch_size=4, progress=False)
    assert isinstance(eng, gen.HFEngine) and eng.batch_size == 4
