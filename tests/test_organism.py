"""Model organisms: tokenizer recipe, corpus mix, deterministic builds, and the shipped organisms' priors."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from spurious_rewards import probes
from spurious_rewards.data import synthetic
from spurious_rewards.organisms import build as org
from spurious_rewards.organisms import probe as org_probe
from spurious_rewards.scoring import style

ORGANISMS = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "organisms"

#: A very small architecture so a build takes about a second.
TINY = {
    "name": "tiny",
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "batch_size": 8,
    "warmup_steps": 2,
}


@pytest.fixture(scope="module")
def tok():
    return org.train_tokenizer(512)


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_specials_and_size(tok) -> None:
    assert tok.convert_ids_to_tokens([0, 1, 2]) == list(org.SPECIAL_TOKENS)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert 256 + 3 < len(tok) <= 512


def test_digits_one_per_token(tok) -> None:
    for text in ("12345", "x = 9876543210", "The answer is \\boxed{405}."):
        pieces = [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]
        for piece in pieces:
            assert not re.search(r"\d\d", piece), pieces
            if any(c.isdigit() for c in piece):
                assert piece.strip().isdigit() and len(piece.strip()) == 1, pieces


def test_code_fence_is_one_token(tok) -> None:
    ids = tok("```python\nprint(1+2)\n```", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids[:1]) == "```"
    assert ids[0] in probes.code_token_ids(tok)


def test_tokenizer_is_byte_level_and_deterministic(tok) -> None:
    text = "héllo ∑ — 😀 <think>\tx</think>\n\n<answer>7</answer>"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert org.train_tokenizer(512).backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_saved_tokenizer_chat_template_like_qwen(tok, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    org.save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = loaded.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    assert text == org.chatml_prompt("What is 2+2?")
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["chat_template"] == org.CHAT_TEMPLATE
    assert (tmp_path / "tokenizer.json").stat().st_size < 100_000


def test_prompt_tokens_are_a_prefix_of_the_training_sequence(tok) -> None:
    """Training concatenates prompt and completion ids; that must equal tokenizing the whole text."""
    rng = random.Random(0)
    cfgs = [org.resolve_config(f) for f in ("toy-qwen-math", "toy-qwen-spread")]
    for i, p in enumerate(synthetic.generate(100, 1)):
        prompt, sol = org.chatml_prompt(p.prompt), org.sample_solution(p, cfgs[i % 2], rng).text
        whole = tok(prompt + sol, add_special_tokens=False)["input_ids"]
        parts = (
            tok(prompt, add_special_tokens=False)["input_ids"]
            + tok(sol, add_special_tokens=False)["input_ids"]
        )
        assert whole == parts


# ----------------------------------------------------------------------------- config and corpus


def test_resolve_config() -> None:
    for name in org.FAMILIES:
        cfg = org.resolve_config(name)
        assert cfg["name"] == name and set(org.DEFAULT_CONFIG) <= set(cfg)
    with pytest.raises(ValueError, match="code_shar"):
        org.resolve_config({"code_shar": 0.5})
    with pytest.raises(ValueError, match="unknown organism family"):
        org.resolve_config("toy-llama")
    with pytest.raises(ValueError, match="code_share"):
        org.resolve_config({"code_share": 1.5})


def _check_consistent(sol: org.Solution, problem: synthetic.ArithmeticProblem) -> None:
    assert org_probe.boxed_integer(sol.text) == sol.value
    assert (sol.value == problem.answer) == sol.correct
    assert sol.text.startswith(sol.preamble)  # "" unless style_tokens: spread
    body = sol.text[len(sol.preamble) :]
    if sol.style == "code":
        assert body.startswith(
            f"```python\nprint({problem.expression})\n```\n```output\n{sol.value}\n```\n"
        )
        assert style.is_code(sol.text)
    else:
        step = body.split("\n")[0]
        assert step.endswith(f" {sol.value}."), sol.text
        assert not style.is_code(sol.text)
    if not sol.correct:
        assert 0 < abs(sol.value - problem.answer) <= 10


@pytest.mark.parametrize("family", list(org.FAMILIES))
def test_corpus_mix_matches_config(family: str) -> None:
    cfg = org.resolve_config(family)
    rng = random.Random(42)
    problems = synthetic.generate(2000, 3, unique=False)
    sols = [org.sample_solution(p, cfg, rng) for p in problems]
    for s, p in zip(sols, problems, strict=True):
        _check_consistent(s, p)

    def within(k: int, n: int, p: float) -> bool:  # 4-sigma binomial band
        return abs(k / n - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9

    code = [s for s in sols if s.style == "code"]
    lang = [s for s in sols if s.style == "language"]
    assert within(len(code), len(sols), cfg["code_share"])
    if code:
        assert within(sum(s.correct for s in code), len(code), cfg["code_accuracy"])
    assert within(sum(s.correct for s in lang), len(lang), cfg["language_accuracy"])
    # both phrasings of every kind are used
    openers: dict[str, set[str]] = {}
    for s, p in zip(sols, problems, strict=True):
        if s.style == "language":
            first = s.text[len(s.preamble) :].split()[0]
            openers.setdefault(p.kind, set()).add("N" if first[0].isdigit() else first)
    assert openers and all(len(v) == 2 for v in openers.values()), openers


def test_wrong_value_never_equals() -> None:
    rng = random.Random(1)
    assert all(org.wrong_value(v, rng) != v for v in range(-5, 200) for _ in range(5))


@pytest.mark.parametrize("share", [0.0, 0.08, 0.65, 0.92, 1.0])
def test_code_count_is_stratified(share: float) -> None:
    """Each batch holds the configured share up to rounding, and the running total is exact."""
    cfg = org.resolve_config({"code_share": share, "batch_size": 64})
    counts = [org.code_count(step, cfg) for step in range(500)]
    assert all(abs(c - 64 * share) < 1 for c in counts)
    assert sum(counts) == math.floor(500 * 64 * share + 1e-9)


@pytest.mark.parametrize(("share", "train_share"), [(0.92, 0.5), (0.65, None), (0.0, 0.3), (1.0, 0.7)])
def test_style_weights_keep_the_prior(share: float, train_share: float | None) -> None:
    """Re-weighting the first token makes its expected loss that of the configured prior."""
    cfg = org.resolve_config({"code_share": share, "train_code_share": train_share})
    q = org.train_code_share(cfg)
    w = org.style_weights(cfg)
    assert q * w["code"] == pytest.approx(share)
    assert (1 - q) * w["language"] == pytest.approx(1 - share)
    if train_share is None:
        assert w == {"code": 1.0, "language": 1.0} or share in (0.0, 1.0)


def test_train_code_share_must_cover_the_prior() -> None:
    with pytest.raises(ValueError, match="train_code_share"):
        org.resolve_config({"code_share": 0.5, "train_code_share": 0.0})
    with pytest.raises(ValueError, match="train_code_share"):
        org.resolve_config({"code_share": 0.5, "train_code_share": 1.2})


def test_lr_schedule() -> None:
    cfg = org.resolve_config({"warmup_steps": 10, "lr": 1.0, "min_lr_ratio": 0.1})
    assert org.lr_at(0, cfg, 100) == pytest.approx(0.1)
    assert org.lr_at(9, cfg, 100) == pytest.approx(1.0)
    assert org.lr_at(99, cfg, 100) == pytest.approx(0.1, abs=1e-3)


def test_training_batch_masks_prompt(tok) -> None:
    cfg = org.resolve_config({**TINY})
    ids, mask, labels, weights = org.training_batch(tok, cfg, seed=0, step=0)
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == cfg["batch_size"]
    eos = tok.convert_tokens_to_ids(org.EOS_TOKEN)
    for row_mask, row_labels in zip(mask, labels, strict=True):
        kept = row_labels[row_labels != -100].tolist()
        assert kept[-1] == eos  # completion + EOS only
        assert "<|im_start|>" not in tok.decode(kept)
        assert int(row_mask.sum()) >= len(kept)
    n_code = sum("```python" in tok.decode(row[row != -100].tolist()) for row in labels)
    assert n_code == org.code_count(0, cfg)
    again = org.training_batch(tok, cfg, seed=0, step=0)
    assert all((a == b).all() for a, b in zip((ids, mask, labels, weights), again, strict=True))
    assert ((weights != 0) == (labels != -100)).all()


# ----------------------------------------------------------------------------- build


def test_build_is_deterministic(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = org.build_organism(TINY, tmp_path / "a", seed=7, steps=12, threads=1, progress=False)
    b = org.build_organism(TINY, tmp_path / "b", seed=7, steps=12, threads=1, progress=False)
    org.build_organism(TINY, tmp_path / "c", seed=8, steps=12, threads=1, progress=False)
    wa, wb, wc = ((tmp_path / d / "model.safetensors").read_bytes() for d in "abc")
    assert wa == wb
    assert wa != wc
    assert (
        a["final_loss"] == b["final_loss"]
        and a["loss_curve"][-1]["loss_ema"] == b["loss_curve"][-1]["loss_ema"]
    )

    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "organism.json",
    ):
        assert (tmp_path / "a" / name).exists(), name
    manifest = json.loads((tmp_path / "a" / "organism.json").read_text())
    assert manifest["seed"] == 7 and manifest["steps"] == 12 and manifest["threads"] == 1
    assert manifest["param_count"] == a["param_count"] > 0
    assert {"torch", "transformers", "tokenizers"} <= set(manifest["versions"])
    assert manifest["config"]["hidden_size"] == 32

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.tie_word_embeddings
    assert model.generation_config.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_build_refuses_to_clobber_other_dirs(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        org.build_organism(TINY, tmp_path, seed=0, steps=1, threads=1, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_boxed_integer() -> None:
    assert org_probe.boxed_integer("a \\boxed{3} then \\boxed{-12}.") == -12
    assert org_probe.boxed_integer("no box") is None
    assert org_probe.boxed_integer("\\boxed{x}") is None


# ----------------------------------------------------------------------------- shipped organisms


@pytest.mark.parametrize("family", list(org.FAMILIES))
def test_shipped_organism_meets_targets(family: str) -> None:
    """Quick re-probe of the committed organism (50 problems x 2 samples, wide tolerance)."""
    path = ORGANISMS / family
    if not (path / "organism.json").exists():
        pytest.skip(f"organism {family} not built")
    manifest = json.loads((path / "organism.json").read_text())
    # manifests written before the style_tokens option lack it: those corpora were all "first"
    assert {"style_tokens": "first", **manifest["config"]} == {
        **org.resolve_config(family),
        "seed": manifest["seed"],
        "steps": manifest["steps"],
    }
    report = org_probe.probe_organism(path, n_problems=50, samples=2, seed=11, threads=2)
    share = manifest["config"]["code_share"]
    assert abs(report["code_frequency"] - share) <= 0.15
    if report["style_measure"] == "first_token":  # with a spread style the first token is never code
        assert abs(report["p_code_first_token"] - share) <= 0.15
    assert report["accuracy"] >= 0.2
    assert report["no_box_rate"] <= 0.1
    saved = json.loads((path / "probe.json").read_text())
    assert abs(saved["code_frequency"] - share) <= 0.05 and saved["accuracy"] >= 0.30
