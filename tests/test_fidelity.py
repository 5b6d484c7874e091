"""The authors' rollout-side behaviours in both backends (issue 14, items 1-3 and the prompt order).

* the maths (:mod:`spurious_rewards.grpo_math`) against by-hand computations;
* the authors' R1 prompt (literal backslash-n) and their r1-style format reward;
* TRL: :class:`~spurious_rewards.training.trl_extensions.FidelityGRPOTrainer` on an organism taught
  to answer in the R1 format: rollouts stop at ``</answer>`` and the completion mask ends
  there (the plain trainer writes on), whitened advantages match a by-hand whitening,
  and a whole R1-template ``spurious train`` run;
* OpenRLHF: the launcher's command, and inside the isolated OpenRLHF 0.11.2 venv its own
  SamplingParams, advantage and policy-loss functions and prompt loader with the patches,
  compared with by-hand numbers.

The R1-trained organism fixture is defined here (it is only used here).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spurious_rewards import config as cfgmod
from spurious_rewards import data, grpo_math, templates
from spurious_rewards.scoring import rewards
from spurious_rewards.training import openrlhf_backend as openrlhf
from spurious_rewards.training import openrlhf_patches
from spurious_rewards.training import trl_backend as train

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"
STUBS = ROOT / "tests" / "openrlhf_stubs"
STOP = "</answer>"


# ---------------------------------------------------------------------------
# maths
# ---------------------------------------------------------------------------


def _by_hand_whiten(adv: list[float], lengths: list[int]) -> list[float]:
    n = sum(lengths)
    mean = sum(a * k for a, k in zip(adv, lengths, strict=True)) / n
    var = sum((a - mean) ** 2 * k for a, k in zip(adv, lengths, strict=True)) / n
    return [(a - mean) / math.sqrt(max(var, 1e-8)) for a in adv]


def test_whiten_advantages_matches_a_by_hand_token_weighted_whitening():
    adv = [0.87, -0.87, -0.87, 0.87, 0.0, 0.0, 1.5, -0.5]
    lengths = [2, 9, 7, 1, 4, 4, 3, 6]
    mask = torch.zeros(len(adv), max(lengths))
    for i, k in enumerate(lengths):
        mask[i, :k] = 1
    got = grpo_math.whiten_advantages(torch.tensor(adv), mask)
    want = _by_hand_whiten(adv, lengths)
    assert got.tolist() == pytest.approx(want, abs=1e-6)
    # not a no-op: the token-weighted mean is negative here, so zero advantages become positive
    assert got[4] > 0.1
    # per-token form (OpenRLHF's) gives the same numbers on the response tokens
    tok = torch.tensor(adv).unsqueeze(1).expand_as(mask).clone()
    got_tok = grpo_math.whiten_advantages(tok, mask)
    assert got_tok[:, 0].tolist() == pytest.approx(want, abs=1e-6)
    # two ranks holding the same data (all_reduce sums them) give the one-rank statistics
    one = grpo_math.whitening_stats(torch.tensor(adv), mask)
    two = grpo_math.whitening_stats(torch.tensor(adv), mask, all_reduce=lambda t: 2 * t)
    assert [float(x) for x in two] == pytest.approx([float(x) for x in one])
    # constant advantages: the variance floor, not a division by zero
    assert grpo_math.whiten_advantages(torch.ones(3), torch.ones(3, 2)).abs().max() == 0


def test_stop_length_keeps_the_token_that_completes_the_stop():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ORGANISM)
    ids = tok(" so </think> <answer> 7 </answer>\n<|user|>\nmore", add_special_tokens=False)["input_ids"]

    def dec(x):
        return tok.decode(list(x), skip_special_tokens=False)

    k = grpo_math.stop_length(ids, dec, [STOP])
    assert dec(ids[:k]).endswith(STOP) and STOP not in dec(ids[: k - 1])
    assert grpo_math.stop_length(ids[: k - 1], dec, [STOP]) == k - 1  # no stop: everything kept
    assert grpo_math.stop_length(ids, dec, []) == len(ids)
    with pytest.raises(ValueError, match="allowed values: none, batch_token"):
        grpo_math.check_whitening("batch")


# ---------------------------------------------------------------------------
# the authors' R1 prompt and format reward
# ---------------------------------------------------------------------------


def test_r1_authors_template_has_a_literal_backslash_n():
    p = templates.render_prompt(None, "r1_authors", "What is {x}?")
    assert "\n" not in p and "\\n\\n<|user|>\\nWhat is {x}?\\n<|assistant|>\\n<think>" in p
    assert p.replace("\\n", "\n") == templates.render_prompt(None, "r1", "What is {x}?")
    assert templates.is_r1("r1_authors") and templates.is_r1("r1") and not templates.is_r1("chat")
    assert templates.stop_strings("r1_authors") == [STOP]


@pytest.mark.parametrize(("text", "r1", "want"), [
    ("<think> x </think> <answer> 12 </answer>", True, 1.0),
    ("no tags at all, no box", True, 1.0),            # the whole text is the "span": nearly constant
    ("<answer></answer>", True, 0.0),
    ("<answer> </answer>", True, 1.0),                # whitespace counts (no strip)
    ("<answer>answer</answer>", True, 0.0),           # rstrip("</answer>") strips characters
    ("<answer> \\boxed{3} </answer>", True, 1.0),
    ("the answer is \\boxed{3}", False, 1.0),         # without r1: the box format
    ("the answer is 3", False, 0.0),
])
def test_format_authors_is_the_authors_r1_style_format(text, r1, want):
    ctx = rewards.RewardContext(r1=r1)
    assert rewards.parse_reward("format_authors")(text, None, ctx) == want
    if not r1:
        assert rewards.format_reward(text, None, ctx) == want


# ---------------------------------------------------------------------------
# TRL
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def r1_organism(tmp_path_factory) -> Path:
    """The toy organism fine-tuned (seeded, ~1 min on one core) to answer in the R1 format and then
    continue with a made-up next turn, as base models do without a stop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("r1-organism")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(ORGANISM)
    model = AutoModelForCausalLM.from_pretrained(ORGANISM, dtype=torch.float32)
    pairs = []
    for a in range(1, 9):
        for b in range(1, 9):
            prompt = templates.render_prompt(tok, "r1", f"What is {a} + {b}?")
            pairs.append((prompt, f" so </think> <answer> {a + b} </answer>\n<|user|>\nWhat is {b} + {a}?"
                          + tok.eos_token))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tok.padding_side = "right"
    for step in range(110):
        batch = [pairs[(step * 8 + j) % len(pairs)] for j in range(8)]
        enc = tok([p + c for p, c in batch], return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for j, (p, _) in enumerate(batch):
            labels[j, : len(tok(p)["input_ids"])] = -100
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.padding_side = "left"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _trainer(model_path: Path, tmp_path: Path, stop: list[str], whitening: str):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig

    from spurious_rewards.training.trl_extensions import FidelityGRPOTrainer

    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["models"]["toy-qwen-math"].update(path=str(model_path), template="r1")
    cfg["grpo"].update(steps=1, prompts_per_rollout=4, group_size=4, mini_batch=16, micro_batch=16,
                       max_new_tokens=48, advantage_whitening=whitening)
    spec = cfgmod.run_spec(cfgmod.validate(cfg), cfgmod.Run("toy-qwen-math", "format", "clip", 1))
    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    rows = [{"prompt": templates.render_prompt(tok, "r1", f"What is {a} + {a + 1}?")} for a in range(1, 5)]

    def has_answer(completions, **_):
        return [float(STOP in c) for c in completions]

    return FidelityGRPOTrainer(model=str(model_path), reward_funcs=[has_answer],
                               args=GRPOConfig(**train.trl_config_kwargs(spec, str(tmp_path / "trl"))),
                               train_dataset=Dataset.from_list(rows), processing_class=tok,
                               stop_strings=stop, advantage_whitening=whitening), tok


def _rollout(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    torch.manual_seed(1)
    trainer.model.train()
    return trainer._generate_and_score_completions(batch)


def test_trl_rollouts_stop_at_answer_and_the_loss_mask_ends_there(r1_organism, tmp_path):
    trainer, tok = _trainer(r1_organism, tmp_path, [STOP], "none")
    out = _rollout(trainer)
    ids, mask = out["completion_ids"], out["completion_mask"]
    stopped = 0
    for row, m in zip(ids, mask, strict=True):
        kept = row[m.bool()].tolist()
        assert m.tolist() == sorted(m.tolist(), reverse=True)  # a prefix: nothing trained on after the end
        text = tok.decode(kept, skip_special_tokens=False)
        if STOP in text:
            stopped += 1
            assert text.endswith(STOP), text  # ends at the stop: no pad, no EOS, no continuation
            assert STOP not in tok.decode(kept[:-1], skip_special_tokens=False)
    # about a third reach it (218 of 640 rollouts: 20 seeds x 2 decoders); two are enough to check the cut
    assert stopped >= 2, f"only {stopped} of {len(ids)} rollouts reached </answer>"
    assert trainer._metrics["train"]["completions/stopped_ratio"][-1] == pytest.approx(stopped / len(ids))

    plain, _ = _trainer(r1_organism, tmp_path / "plain", [], "none")  # the same rollouts, no stop
    out_plain = _rollout(plain)
    continued = [tok.decode(r[m.bool()].tolist(), skip_special_tokens=False) for r, m in
                 zip(out_plain["completion_ids"], out_plain["completion_mask"], strict=True)]
    assert any(STOP in t and not t.endswith(STOP) for t in continued), "without the stop the model writes on"


def test_trl_rollouts_decode_with_sample_ids_exactly_as_generate(r1_organism, tmp_path, monkeypatch):
    """TRL's transformers path goes through ``generation.sample_ids`` (finished rows leave the
    batch); with that dropping off it gives ``generate``'s rollouts token for token, stop included."""
    from spurious_rewards import generation
    from spurious_rewards.training import trl_extensions

    calls = []
    real = trl_extensions.sample_ids
    monkeypatch.setattr(trl_extensions, "sample_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(generation, "COMPACT_SHARE", 2.0)
    trainer, _ = _trainer(r1_organism, tmp_path / "lean", [STOP], "none")
    lean = _rollout(trainer)
    assert calls, "the rollout did not go through sample_ids"

    monkeypatch.setattr(trl_extensions, "_plain_sampling", lambda cfg: False)  # back to model.generate
    trainer, _ = _trainer(r1_organism, tmp_path / "generate", [STOP], "none")
    ref = _rollout(trainer)
    assert len(calls) == 1
    assert torch.equal(lean["completion_ids"], ref["completion_ids"])
    assert torch.equal(lean["completion_mask"], ref["completion_mask"])


def test_trl_whitening_matches_a_by_hand_whitening(r1_organism, tmp_path):
    trainer, _ = _trainer(r1_organism, tmp_path, [STOP], "batch_token")
    out = _rollout(trainer)
    group_adv = list(trainer._logs["advantages"])  # TRL's group-normalised advantages, before the hook
    lengths = out["completion_mask"].sum(1).tolist()
    want = _by_hand_whiten(group_adv, lengths)
    assert out["advantages"].tolist() == pytest.approx(want, abs=1e-5)
    assert out["advantages"].tolist() != pytest.approx(group_adv, abs=1e-3)


def test_r1_toy_run_trains_with_stop_and_whitening(r1_organism, tmp_path):
    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["models"]["toy-qwen-math"].update(path=str(r1_organism), template="r1")
    cfg["grpo"].update(steps=1, save_every=1, prompts_per_rollout=4, group_size=4, mini_batch=8, micro_batch=8,
                       max_new_tokens=40, max_prompt_tokens=512, lr=1e-3, advantage_whitening="batch_token")
    cfg = cfgmod.validate(cfg)
    path = tmp_path / "train.jsonl"
    data.prepare_to_file({"name": "train", "kind": "synthetic", "n": 16, "seed": 0, "level": 1, "split": "train",
                          "source": "arith"}, path)
    cfg["rewards"]["format"]["spec"] = "format_authors"  # the authors' r1-style format reward
    spec = cfgmod.run_spec(cfg, cfgmod.Run("toy-qwen-math", "format", "clip", 1))
    cmd = [sys.executable, "-m", "spurious_rewards.cli", "train", "--spec", json.dumps(spec), "--data", str(path),
           "--state", str(tmp_path / "state"), "--out-checkpoints", str(tmp_path / "ckpt"),
           "--out-metrics", str(tmp_path / "metrics.jsonl"), "--threads", "1"]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[1]["stopped_ratio"] is not None and 0 < rows[1]["stopped_ratio"] <= 1
    assert (tmp_path / "ckpt" / "step_1" / "model.safetensors").exists()


# ---------------------------------------------------------------------------
# OpenRLHF
# ---------------------------------------------------------------------------


def test_openrlhf_commands_carry_the_patch_options():
    paper = cfgmod.load(ROOT / "config" / "paper.yaml")
    for model, stop in (("Llama-3.1-8B", [STOP]), ("Qwen2.5-Math-7B", [])):
        spec = cfgmod.run_spec(paper, cfgmod.Run(model, "ground_truth", "clip", 2))
        cmd = openrlhf.build_command(spec, data_file="/d.jsonl", reward_file="/r.py", state_dir="/s", gpus=8, env={})
        assert cmd[1:4] == ["-m", "spurious_rewards.training.openrlhf_patches", "--spurious.fidelity"]
        options, rest = openrlhf_patches.split_argv(cmd[3:])
        assert options == {"stop": stop, "advantage_whitening": "batch_token", "prompt_seed": 2}
        assert rest == cmd[5:] and "--spurious.fidelity" not in rest
        assert rest[rest.index("--actor.loss_agg_mode") + 1] == "token-mean"
    with pytest.raises(ValueError, match="allowed values: none, batch_token"):
        openrlhf_patches.parse_options('{"advantage_whitening": "yes"}')
    with pytest.raises(ValueError, match="unknown keys"):
        openrlhf_patches.parse_options('{"stopp": []}')
    with pytest.raises(ValueError, match="exactly once"):
        openrlhf_patches.split_argv(["--actor.eps_clip", "0.2"])


@pytest.fixture(scope="module")
def openrlhf_python() -> Path:
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "openrlhf-env.sh")], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"openrlhf-env.sh failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1]) / "bin" / "python"


def test_openrlhf_own_functions_with_the_patches_match_by_hand(openrlhf_python, tmp_path):
    rewards_ = [[1, 0, 0, 1], [1, 1, 1, 1], [0, 1, 0, 0]]
    lengths = [[2, 9, 7, 1], [4, 4, 3, 6], [5, 2, 8, 3]]  # correct answers shorter: mean advantage < 0
    req = {"rewards": rewards_, "lengths": lengths, "prompt_lens": [4, 3, 5], "eps": 0.2, "seed": 7}
    (tmp_path / "req.json").write_text(json.dumps(req))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONPATH=os.pathsep.join([str(STUBS), str(ROOT / "workflow")]), PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([str(openrlhf_python), str(STUBS / "fidelity_check.py"), str(tmp_path / "req.json"),
                           str(tmp_path / "out.json")], capture_output=True, text=True, timeout=600, env=env,
                          cwd=str(STUBS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert set(out["applied"]) == {"stop_strings", "advantage_whitening", "prompt_order"}
    assert out["sampling"] == {"stop": [STOP], "include_stop_str_in_output": True, "temperature": 1.0}

    # group_norm (unbiased std + 1e-9), then token-weighted whitening, by hand
    group = []
    for rs in rewards_:
        m = sum(rs) / len(rs)
        sd = math.sqrt(sum((r - m) ** 2 for r in rs) / (len(rs) - 1))
        group += [(r - m) / (sd + 1e-9) for r in rs]
    flat_len = [k for ls in lengths for k in ls]
    want = _by_hand_whiten(group, flat_len)
    got = out["advantages"]
    assert [g["n"] for g in got] == flat_len and all(g["all_equal"] for g in got)
    assert [g["first"] for g in got] == pytest.approx(want, abs=1e-5)
    assert got[4]["first"] > 0.1  # an all-correct group gets a positive advantage: what whitening changes

    # OpenRLHF's PolicyLoss, token-mean, eps 0.2, against the clipped surrogate by hand
    pl = out["policy_loss"]
    terms, clipped = [], 0
    for d, a, m in zip(pl["delta"], pl["adv"], pl["mask"], strict=True):
        if m:
            ratio = math.exp(d)
            terms.append(-min(ratio * a, min(max(ratio, 0.8), 1.2) * a))
            clipped += min(max(ratio, 0.8), 1.2) * a < ratio * a
    assert clipped > 0  # the clip binds somewhere, so the check covers it
    assert pl["loss"] == pytest.approx(sum(terms) / len(terms), abs=1e-6)  # token mean over every action token

    o = out["order"]
    assert o["seeded"][0] == o["seeded"][1] and sorted(o["seeded"][0]) == list(range(50))
    assert o["seeded"][0] != list(range(50))  # still shuffled
    assert o["resumed"] == o["seeded"][0]  # a resumed loader continues the same order
    assert o["unseeded"][0] != o["unseeded"][1]  # what OpenRLHF does without the patch
    assert o["prepare_datasets_wrapped"]


def test_openrlhf_patches_reach_a_real_ray_worker(openrlhf_python, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "RAY_ADDRESS")}
    env.update(PYTHONPATH=os.pathsep.join([str(STUBS), str(ROOT / "workflow")]), PYTHONNOUSERSITE="1",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([str(openrlhf_python), str(STUBS / "ray_hook_check.py"), str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(STUBS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    w = out["worker"]
    assert w["pid"] != out["driver_pid"]  # another process: the patch arrived by the setup hook, not by import
    assert w["stop"] == [STOP] and w["include_stop_str_in_output"] is True and w["prepare_datasets_wrapped"]
    assert set(w["applied"]) == {"stop_strings", "advantage_whitening", "prompt_order"}
