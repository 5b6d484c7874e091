"""The ``style_tokens: spread`` corpus: seeded, its style not set by the first token, the old corpora intact."""

from __future__ import annotations

import collections
import hashlib
import json
import math
import random
from pathlib import Path

import pytest

from spurious_rewards import config as cfgmod
from spurious_rewards.audit import clip_probe
from spurious_rewards.data import synthetic
from spurious_rewards.organisms import build as org
from spurious_rewards.organisms import probe as org_probe
from spurious_rewards.scoring import style

ROOT = Path(__file__).resolve().parents[1]
SPREAD = ROOT / "workflow" / "resources" / "organisms" / "toy-qwen-spread"


@pytest.fixture(scope="module")
def tok():
    return org.train_tokenizer(512)


def _corpus(family: str | dict, n: int, seed: int) -> list[org.Solution]:
    cfg = org.resolve_config(family)
    rng = random.Random(seed)
    return [org.sample_solution(p, cfg, rng) for p in synthetic.generate(n, seed, unique=False)]


def _information(keys: list, styles: list[str]) -> tuple[float, float]:
    """Plug-in (mutual information I(key; style), entropy H(style)) in nats."""
    n = len(keys)
    joint = collections.Counter(zip(keys, styles, strict=True))
    by_key, by_style = collections.Counter(keys), collections.Counter(styles)
    info = sum(c / n * math.log(c * n / (by_key[k] * by_style[s])) for (k, s), c in joint.items())
    return info, -sum(c / n * math.log(c / n) for c in by_style.values())


def test_spread_corpus_is_seeded() -> None:
    a = [s.text for s in _corpus("toy-qwen-spread", 300, 4)]
    assert a == [s.text for s in _corpus("toy-qwen-spread", 300, 4)]
    assert a != [s.text for s in _corpus("toy-qwen-spread", 300, 5)]


def test_spread_solution_is_preamble_then_the_first_token_body() -> None:
    """Same draws as the ``first`` corpus, then a preamble: the bodies (style, value, text) agree."""
    cfg_first, cfg_spread = org.resolve_config("toy-qwen-math"), org.resolve_config("toy-qwen-spread")
    first, spread = [], []
    for i, p in enumerate(synthetic.generate(500, 2, unique=False)):  # one stream per problem for both
        first.append(org.sample_solution(p, cfg_first, random.Random(i)))
        spread.append(org.sample_solution(p, cfg_spread, random.Random(i)))
    for f, s in zip(first, spread, strict=True):
        assert (s.style, s.value, s.correct) == (f.style, f.value, f.correct)
        assert s.text == s.preamble + f.text and f.preamble == ""
        assert s.preamble.endswith(".\n") and "python" not in s.preamble.lower()
        assert style.is_code(s.text) == (s.style == "code")
        assert org_probe.boxed_integer(s.text) == s.value
    share = sum(s.style == "code" for s in spread) / len(spread)
    assert abs(share - 0.65) <= 4 * math.sqrt(0.65 * 0.35 / len(spread))


def test_spread_style_is_not_decided_by_the_first_token(tok) -> None:
    """On the corpus: the first token says nothing about the style; information arrives over later tokens.

    For the first-token corpus the first token carries all of H(style); for the spread one
    about none (the plug-in bias is ~(tokens - 1) / (2 n) ~ 0.001 nats here), and the
    information grows over the following tokens instead of jumping at one of them.
    """
    n = 4000
    for family, expect_first in (("toy-qwen-math", "all"), ("toy-qwen-spread", "none")):
        sols = _corpus(family, n, 11)
        ids = [tok(s.text, add_special_tokens=False)["input_ids"] for s in sols]
        styles = [s.style for s in sols]
        info1, h = _information([i[0] for i in ids], styles)
        if expect_first == "all":
            assert info1 == pytest.approx(h, abs=1e-9)
            continue
        assert h > 0.6 and info1 < 0.01
        info = [_information([tuple(i[:k]) for i in ids], styles)[0] for k in range(1, 8)]
        assert info == sorted(info) and info[2] < 0.5 * h  # three tokens in: still mostly undecided
        # P(code | first token) is the prior whichever token opens the answer
        for first in set(i[0] for i in ids):
            rows = [s for s, i in zip(styles, ids, strict=True) if i[0] == first]
            if len(rows) >= 200:
                p = sum(r == "code" for r in rows) / len(rows)
                assert abs(p - 0.65) <= 4 * math.sqrt(0.65 * 0.35 / len(rows)), (tok.decode([first]), p)


def test_spread_completions_fit_the_generation_budget(tok) -> None:
    """Every spread completion plus EOS fits the 48 new tokens of rollouts and evaluation (config.yaml)."""
    sols = _corpus("toy-qwen-spread", 3000, 3)
    lengths = [len(tok(s.text, add_special_tokens=False)["input_ids"]) + 1 for s in sols]
    assert max(lengths) <= 48
    pre = [len(tok(s.preamble, add_special_tokens=False)["input_ids"]) for s in sols]
    assert min(pre) >= 3 and sum(pre) / len(pre) > 6


def test_existing_corpora_are_unchanged(tok) -> None:
    """The shipped organisms' corpora and batches, bit for bit, as before ``style_tokens`` existed.

    The digests were taken with the code that built the shipped organisms. The text digest
    is pure Python; the batch digest also depends on the tokenizers version (the
    manifests record the one the organisms were built with).
    """
    golden = {
        "toy-qwen-math": ("353c8d03403fce08", "b8bdcac23b64b0be"),
        "toy-badcode": ("1d0d3d720b5cb021", "f1831bd439b6f6ed"),
        "toy-nocode": ("eccdd340faadd091", "69b93a756fe4d40c"),
    }
    for family, (text_digest, batch_digest) in golden.items():
        cfg = org.resolve_config(family)
        assert cfg["style_tokens"] == "first"
        rng = random.Random(5)
        texts = [org.sample_solution(p, cfg, rng).text for p in synthetic.generate(300, 9, unique=False)]
        assert hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16] == text_digest, family
        h = hashlib.sha256()
        for step in (0, 1, 7):
            for t in org.training_batch(tok, {**cfg, "batch_size": 16}, seed=0, step=step):
                h.update(t.numpy().tobytes())
        assert h.hexdigest()[:16] == batch_digest, family
    assert hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16] == "45cc47193be9561a"


def test_style_tokens_is_validated() -> None:
    with pytest.raises(ValueError, match="style_tokens must be one of first, spread"):
        org.resolve_config({"style_tokens": "late"})
    with pytest.raises(ValueError, match="train_code_share needs style_tokens: first"):
        org.resolve_config({"style_tokens": "spread", "train_code_share": 0.5})
    assert org.style_measure(org.resolve_config("toy-qwen-spread")) == "code_frequency"
    assert {org.style_measure(org.resolve_config(f)) for f in ("toy-qwen-math", "toy-badcode")} == {"first_token"}


def test_config_schema_defaults_and_rejects_style_tokens() -> None:
    cfg = cfgmod.load(ROOT / "config" / "organism-spread.yaml")
    models = cfg["models"]
    assert models["toy-qwen-spread"]["organism"]["style_tokens"] == "spread"
    assert all(models[m]["organism"]["style_tokens"] == "first" for m in ("toy-qwen-math", "toy-badcode"))
    base = cfgmod.load(ROOT / "config.yaml")
    assert "toy-qwen-spread" not in base["models"]  # the default study is unchanged
    bad = json.loads(json.dumps(base))
    bad["models"]["toy-qwen-math"]["organism"]["style_tokens"] = "late"
    with pytest.raises(cfgmod.ConfigError, match="style_tokens.*first, spread"):
        cfgmod.validate(bad)


def test_clip_probe_auto_uses_code_frequency_for_spread_organisms(tmp_path: Path) -> None:
    spec = {"probe": {"style": "auto"}, "model": {"organism": {"code_share": 0.65, "style_tokens": "spread"}}}
    assert clip_probe.style_measure(spec, tmp_path) == "code_frequency"  # the config's block decides
    spec["model"]["organism"]["style_tokens"] = "first"
    assert clip_probe.style_measure(spec, tmp_path) == "first_token"
    spec["model"] = {}
    (tmp_path / "organism.json").write_text(json.dumps({"format": 1, "style_measure": "code_frequency"}))
    assert clip_probe.style_measure(spec, tmp_path) == "code_frequency"  # else the manifest
    (tmp_path / "organism.json").write_text(json.dumps({"format": 1}))  # written before the option
    assert clip_probe.style_measure(spec, tmp_path) == "first_token"


def test_first_word_style_information() -> None:
    texts = ["```python x", "We add", "```python y", "7 plus"]
    info = org_probe.first_word_style_information(texts, ["code", "language", "code", "language"])
    assert info["first_word_style_information"] == pytest.approx(info["style_entropy"]) == pytest.approx(
        math.log(2), abs=1e-4
    )
    info = org_probe.first_word_style_information(["So a", "So b"], ["code", "language"])
    assert info["first_word_style_information"] == 0.0


def test_sample_token_entropy_of_a_built_model(tmp_path: Path, tok) -> None:
    """The entropy pass runs on a real (tiny, barely trained) organism and gives sane, seeded numbers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tiny = {"name": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64,
            "batch_size": 8, "warmup_steps": 2, "style_tokens": "spread"}
    manifest = org.build_organism(tiny, tmp_path / "m", seed=1, steps=3, threads=1, progress=False)
    assert manifest["style_measure"] == "code_frequency" and "filler-word" in manifest["corpus"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    mtok = AutoTokenizer.from_pretrained(tmp_path / "m")
    mtok.padding_side = "left"
    prompts = [org.chatml_prompt(p.prompt) for p in synthetic.generate(3, 0, split="test")]
    a = org_probe.sample_token_entropy(model, mtok, prompts, samples=2, seed=3, max_new_tokens=8)
    assert a == org_probe.sample_token_entropy(model, mtok, prompts, samples=2, seed=3, max_new_tokens=8)
    # an untrained model is near uniform over the vocabulary
    assert 0.5 * math.log(len(mtok)) < a["token_entropy"] <= math.log(len(mtok)) + 1e-6
    assert 1 <= a["mean_completion_tokens"] <= 8


@pytest.mark.slow
def test_shipped_spread_organism() -> None:
    """The committed toy-qwen-spread: its manifest matches the recipe, its probe the targets."""
    if not (SPREAD / "organism.json").exists():
        pytest.skip("toy-qwen-spread not built")
    manifest = json.loads((SPREAD / "organism.json").read_text())
    assert manifest["config"] == {**org.resolve_config("toy-qwen-spread"), "seed": manifest["seed"],
                                  "steps": manifest["steps"]}
    assert manifest["style_measure"] == "code_frequency"
    saved = json.loads((SPREAD / "probe.json").read_text())
    assert abs(saved["code_frequency"] - 0.65) <= 0.06
    assert saved["accuracy_code"] > saved["accuracy_language"]
    assert 0.3 <= saved["token_entropy"] <= 1.0
    assert saved["p_code_first_token"] < 0.01  # the first token never opens the code
    assert saved["first_word_style_information"] < 0.05 < 0.6 < saved["style_entropy"]
    report = org_probe.probe_organism(SPREAD, n_problems=50, samples=2, seed=11, threads=2)
    assert abs(report["code_frequency"] - 0.65) <= 0.15 and report["no_box_rate"] <= 0.1
