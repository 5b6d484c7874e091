"""CPU "model organisms": tiny Qwen2 models, pretrained by the pipeline, that carry the paper's priors.

Why: the paper's effects hinge on what the base model already does, above all how
often it reasons in code and whether code is more or less accurate than words
(docs/paper-setup.md §6.3). Real 7B models cannot be trained on a 2-core CPU, but a
1M-parameter model pretrained for minutes on a synthetic corpus with a chosen
style mix and per-style accuracy reproduces that starting point
(docs/organisms.md). Every family shares one tokenizer recipe and
one architecture, so the families differ only in the priors they were taught.

Nothing in the corpus is ever executed: the code style prints the expression and
the model writes its own ``output`` block, as in the paper's "code reasoning".
"""

from __future__ import annotations

import json
import math
import platform
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import provenance
from ..config import organism_style_measure
from ..data import synthetic

#: Special tokens, in id order (the first three ids of the vocabulary), as in Qwen.
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

#: Qwen2.5's ChatML template without a default system prompt (short sequences matter on CPU).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Qwen2's pre-tokenizer split: single digits, so numbers are spelled digit by digit.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: The tokenizer recipe is shared by all families: a fixed corpus sample, independent of family and seed.
TOKENIZER_SAMPLE_SEED = 20251127
TOKENIZER_SAMPLE_SIZE = 6000

#: Manifest schema version (bump when the corpus or training recipe changes meaning).
ORGANISM_FORMAT = 1

#: Defaults from the organism trial (docs/organisms.md §1); a family overrides what it needs.
DEFAULT_CONFIG: dict[str, Any] = {
    "code_share": 0.65,
    # Share of code solutions in the pretraining batches; None = code_share. When it differs,
    # the first completion token's loss is importance-weighted so the learned prior is still
    # code_share, while each style's skill is learned from more examples (see style_weights).
    "train_code_share": None,
    "code_accuracy": 1.0,
    "language_accuracy": 0.5,
    "level": 1,
    "vocab_size": 512,
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "intermediate_size": 512,
    "max_position_embeddings": 1024,
    "lr": 3e-3,
    "warmup_steps": 50,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "batch_size": 64,
    "steps": 2000,
    "seed": 0,
    # Where the style shows: "first" = the first completion token decides it (a code fence or
    # not); "spread" = a preamble of seeded filler words comes first, whose opening words
    # are style-independent and whose later words only lean toward a style, so the
    # decision is spread over several uncertain tokens (see spread_preamble).
    "style_tokens": "first",
}

#: The values of ``style_tokens``.
STYLE_TOKENS: tuple[str, ...] = ("first", "spread")

#: The three organism families, mirroring the paper's model classes (docs/paper-setup.md §6).
FAMILIES: dict[str, dict[str, Any]] = {
    # Qwen2.5-Math-7B: 65% code, code clearly more accurate than language.
    "toy-qwen-math": {"code_share": 0.65, "code_accuracy": 1.0, "language_accuracy": 0.5},
    # Qwen2.5-7B / OLMo2-7B-SFT: code > 90% of the time, and code is the *less* accurate style.
    # Language gets half the training examples (first-token loss re-weighted to keep the 92%
    # prior); at its 8% share the tiny model learned almost no language arithmetic (measured
    # accuracy 0.10 vs 0.21 for code), which would flip the sign of the prior.
    "toy-badcode": {
        "code_share": 0.92,
        "train_code_share": 0.5,
        "code_accuracy": 0.6,
        "language_accuracy": 0.9,
    },
    # Llama / OLMo2 base: never writes code.
    "toy-nocode": {"code_share": 0.0, "code_accuracy": 1.0, "language_accuracy": 0.75},
    # toy-qwen-math's prior, but the style unfolds over several uncertain tokens, as in a real
    # model's samples, instead of being one near-deterministic first token (docs/organisms.md §7).
    "toy-qwen-spread": {
        "code_share": 0.65,
        "code_accuracy": 1.0,
        "language_accuracy": 0.5,
        "style_tokens": "spread",
    },
}

_BOX_RE = re.compile(r"\\boxed\{([^{}]*)\}")


# ----------------------------------------------------------------------------- config


def resolve_config(family: str | dict[str, Any]) -> dict[str, Any]:
    """A complete family config: defaults, then the named family's or the given dict's values.

    Unknown keys raise, so a typo in config.yaml cannot silently fall back to a default.
    """
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(f"unknown organism family {family!r}; known: {', '.join(FAMILIES)}")
        overrides = {"name": family, **FAMILIES[family]}
    else:
        overrides = dict(family)
    unknown = set(overrides) - set(DEFAULT_CONFIG) - {"name"}
    if unknown:
        raise ValueError(
            f"unknown organism config keys: {sorted(unknown)}; allowed: {sorted(DEFAULT_CONFIG)}"
        )
    cfg = {"name": overrides.get("name", "custom"), **DEFAULT_CONFIG, **overrides}
    for key in ("code_share", "code_accuracy", "language_accuracy", "min_lr_ratio"):
        if not 0.0 <= float(cfg[key]) <= 1.0:
            raise ValueError(f"{key} must be in [0, 1], got {cfg[key]}")
    q = train_code_share(cfg)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"train_code_share must be in [0, 1], got {q}")
    if (q == 0.0 and cfg["code_share"] > 0.0) or (q == 1.0 and cfg["code_share"] < 1.0):
        raise ValueError("train_code_share must leave room for every style that code_share asks for")
    if cfg["hidden_size"] % cfg["num_heads"]:
        raise ValueError("hidden_size must be divisible by num_heads")
    if cfg["style_tokens"] not in STYLE_TOKENS:
        raise ValueError(
            f"style_tokens must be one of {', '.join(STYLE_TOKENS)}, got {cfg['style_tokens']!r}"
        )
    if cfg["style_tokens"] == "spread" and q != float(cfg["code_share"]):
        # the re-weighting acts on the first completion token, which is only the style
        # decision when style_tokens is "first"
        raise ValueError("train_code_share needs style_tokens: first (it re-weights the first token)")
    return cfg


def style_measure(cfg: dict[str, Any]) -> str:
    """How to read this organism's style prior (``config.organism_style_measure``, where the
    clip probe reads it too): written to the manifest."""
    return organism_style_measure(cfg)


def train_code_share(cfg: dict[str, Any]) -> float:
    """The code share of the training batches (``train_code_share``, defaulting to ``code_share``)."""
    q = cfg.get("train_code_share")
    return float(cfg["code_share"] if q is None else q)


def style_weights(cfg: dict[str, Any]) -> dict[str, float]:
    """Importance weights for the first completion token of each style.

    The first token is the code/language decision. Training on a share q of code
    solutions while weighting that token by s/q (code) and (1-s)/(1-q) (language)
    makes the expected first-token loss that of share s = ``code_share``, so the
    learned prior is s, while all later tokens (the arithmetic) see q. Why: a style
    that is rare under its prior (language at s = 0.92) would otherwise get too few
    examples for a tiny model to learn its arithmetic, and the organism would no
    longer show "language is the more accurate style".
    """
    s, q = float(cfg["code_share"]), train_code_share(cfg)
    return {"code": s / q if q > 0 else 0.0, "language": (1 - s) / (1 - q) if q < 1 else 0.0}


# ----------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Solution:
    """One corpus completion: its style, its text, the value it boxes and whether that is right."""

    style: str  # "code" or "language"
    text: str
    value: int
    correct: bool
    preamble: str = ""  # the filler words before the style shows ("" for style_tokens: first)


def wrong_value(value: int, rng: random.Random) -> int:
    """A plausible wrong answer: off by one, two or ten, or by a small random offset (never equal)."""
    if rng.random() < 0.6:
        delta = rng.choice((-10, -2, -1, 1, 2, 10))
    else:
        delta = rng.choice([d for d in range(-9, 10) if d != 0])
    return value + delta


def code_solution(problem: synthetic.ArithmeticProblem, value: int) -> str:
    """The code style: print the expression, then the model's own (claimed) output and the box."""
    return f"```python\nprint({problem.expression})\n```\n```output\n{value}\n```\nThe answer is \\boxed{{{value}}}."


def language_solution(problem: synthetic.ArithmeticProblem, value: int, variant: int) -> str:
    """The language style: worded steps (two phrasings per kind), the last step carrying ``value``."""
    ops = problem.operands
    if problem.kind == "add":
        a, b = ops
        step = f"We add {a} and {b} to get {value}." if variant == 0 else f"{a} plus {b} equals {value}."
    elif problem.kind == "sub":
        a, b = ops
        step = (
            f"We subtract {b} from {a} to get {value}." if variant == 0 else f"{a} minus {b} equals {value}."
        )
    elif problem.kind == "mul":
        a, b = ops
        step = f"We multiply {a} by {b} to get {value}." if variant == 0 else f"{a} times {b} equals {value}."
    elif problem.kind == "addmul":
        a, b, c = ops
        s = a + b
        step = (
            f"First {a} plus {b} equals {s}, then {s} times {c} equals {value}."
            if variant == 0
            else f"We add {a} and {b} to get {s}, then multiply by {c} to get {value}."
        )
    else:  # higher levels: no per-kind wording, one generic sentence
        step = (
            f"Working through {problem.expression} step by step gives {value}."
            if variant == 0
            else f"Evaluating {problem.expression} gives {value}."
        )
    return f"{step}\nThe answer is \\boxed{{{value}}}."


#: ``style_tokens: spread``: the preamble's opening word, the same distribution for both styles.
#: Words are chosen from the shared tokenizer's vocabulary so that each is one to three tokens
#: (the tokenizer recipe is common to all families and must not change).
SPREAD_OPENERS: tuple[str, ...] = ("So", "Now", "Ok", "First", "Then", "We", "The", "What", "Let", "Here")
#: Style-independent filler words that may follow the opener (zero to two of them).
SPREAD_SHARED: tuple[str, ...] = ("then", "to", "a", "is", "by", "from", "answer", "the")
#: Words that only lean toward a style (one to three of them, before the body): each is drawn
#: ``SPREAD_LEAN_RATIO`` times more often under the style it leans to than under the other.
SPREAD_LEAN_CODE: tuple[str, ...] = ("print", "out", "put", "get")
SPREAD_LEAN_LANGUAGE: tuple[str, ...] = ("us", "in", "sum", "and")
SPREAD_LEAN_RATIO = 3.0


def spread_preamble(style: str, rng: random.Random) -> str:
    """The filler sentence a ``style_tokens: spread`` solution opens with, ending in ``.\n``.

    Why this shape: a real model's style is not one near-certain first token but unfolds
    over many uncertain ones. Here the first one to three words are drawn the same way
    whatever the style (an opener, then zero to two shared words), so they carry no
    information about it; the next one to three words are soft evidence (likelihood
    ratio ``SPREAD_LEAN_RATIO`` per word), so P(code | prefix) drifts over several tokens;
    and even after them the body's first token is still uncertain. Nothing in the
    preamble contains "python", so the style classifier (``scoring.style.is_code``) sees
    only the body.
    """
    words = [rng.choice(SPREAD_OPENERS)]
    words += [rng.choice(SPREAD_SHARED) for _ in range(rng.randint(0, 2))]
    lean = SPREAD_LEAN_CODE if style == "code" else SPREAD_LEAN_LANGUAGE
    vocab = [*SPREAD_LEAN_CODE, *SPREAD_LEAN_LANGUAGE]
    weights = [SPREAD_LEAN_RATIO if w in lean else 1.0 for w in vocab]
    words += rng.choices(vocab, weights=weights, k=rng.randint(1, 3))
    return " ".join(words) + ".\n"


def sample_solution(
    problem: synthetic.ArithmeticProblem, cfg: dict[str, Any], rng: random.Random, style: str | None = None
) -> Solution:
    """Draw a style by ``code_share`` (unless given) and correctness by that style's accuracy; write it out.

    With ``style_tokens: spread`` a :func:`spread_preamble` is drawn last and put first; the
    earlier draws are the same as for ``first``, so the two corpora share their bodies.
    """
    code = rng.random() < cfg["code_share"] if style is None else style == "code"
    correct = rng.random() < (cfg["code_accuracy"] if code else cfg["language_accuracy"])
    value = problem.answer if correct else wrong_value(problem.answer, rng)
    if code:
        sol = Solution("code", code_solution(problem, value), value, correct)
    else:
        sol = Solution("language", language_solution(problem, value, rng.randrange(2)), value, correct)
    if cfg.get("style_tokens", "first") == "spread":
        pre = spread_preamble(sol.style, rng)
        sol = Solution(sol.style, pre + sol.text, value, correct, pre)
    return sol


def chatml_prompt(problem_text: str) -> str:
    """The chat prompt as text (equal to ``render_prompt(tok, "chat", ...)``; needed before a tokenizer exists)."""
    return f"<|im_start|>user\n{problem_text}<|im_end|>\n<|im_start|>assistant\n"


def tokenizer_sample() -> list[str]:
    """The fixed text sample the shared tokenizer is trained on: both styles, right and wrong answers."""
    rng = random.Random(TOKENIZER_SAMPLE_SEED)
    mix = {**DEFAULT_CONFIG, "code_share": 0.5, "code_accuracy": 0.5, "language_accuracy": 0.5}
    problems = synthetic.generate(TOKENIZER_SAMPLE_SIZE, TOKENIZER_SAMPLE_SEED, split="train", unique=False)
    return [chatml_prompt(p.prompt) + sample_solution(p, mix, rng).text + EOS_TOKEN for p in problems]


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(vocab_size: int = 512, texts: Iterable[str] | None = None) -> Any:
    """A byte-level BPE with Qwen's digit-splitting pre-tokenizer, wrapped as an HF fast tokenizer.

    Byte-level, so any text encodes (the r1 template too); digits are single tokens,
    so arithmetic is learned digit by digit rather than memorised as number tokens.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts) if texts is not None else tokenizer_sample(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=DEFAULT_CONFIG["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tokenizer: Any, out_dir: str | Path) -> None:
    """Save in HF format, loadable by transformers 4.x too (for GPU environments that pin older versions).

    transformers 5 records its own ``TokenizersBackend`` class and keeps the chat template
    only in ``chat_template.jinja``; 4.x knows neither, so the config names the portable
    ``PreTrainedTokenizerFast`` and also carries the template inline.
    """
    tokenizer.save_pretrained(out_dir)
    path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, indent=2) + "\n")


# ----------------------------------------------------------------------------- model and pretraining


def make_model(cfg: dict[str, Any], tokenizer: Any, seed: int) -> Any:
    """A freshly initialised Qwen2 of the family's size (seeded, so builds are reproducible)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_layers"],
        num_attention_heads=cfg["num_heads"],
        num_key_value_heads=cfg["num_heads"],
        max_position_embeddings=cfg["max_position_embeddings"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        use_cache=True,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def lr_at(step: int, cfg: dict[str, Any], total: int) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` at the last step (step-based: deterministic)."""
    base, warm = cfg["lr"], max(1, int(cfg["warmup_steps"]))
    if step < warm:
        return base * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    floor = cfg["min_lr_ratio"]
    return base * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def code_count(step: int, cfg: dict[str, Any]) -> int:
    """Code solutions in batch ``step``: stratified so the running share is exact at every step.

    Drawing each style independently would add batch-to-batch binomial noise (±6 points
    at batch 64) that the optimizer turns into a random walk of the learned prior; the
    prior is the quantity the experiments track, so it is fixed exactly instead.
    """
    per = cfg["batch_size"] * train_code_share(cfg)
    return math.floor((step + 1) * per + 1e-9) - math.floor(step * per + 1e-9)


def training_batch(
    tokenizer: Any,
    cfg: dict[str, Any],
    seed: int,
    step: int,
    prompt_cache: dict[str, list[int]] | None = None,
) -> tuple[Any, Any, Any, Any]:
    """One fresh batch (no fixed corpus file): ``(input_ids, attention_mask, labels, loss_weights)``.

    Problems come from the train split only; styles are stratified (:func:`code_count`).
    Prompt and completion are tokenized apart and concatenated, which is exactly what the
    model sees at generation time (prompt ids, then its own tokens). Labels cover the
    completion and EOS only; weights are 1 there except on the first completion token,
    which carries its style's importance weight (:func:`style_weights`).
    """
    import torch

    rng = random.Random(f"organism-corpus:{seed}:{step}")
    problems = synthetic.generate(
        cfg["batch_size"], seed * 1_000_003 + step, level=cfg["level"], split="train", unique=False
    )
    code_slots = set(rng.sample(range(len(problems)), code_count(step, cfg)))
    first_weight = style_weights(cfg)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    rows: list[tuple[list[int], list[int], float]] = []
    for i, p in enumerate(problems):
        if prompt_cache is not None and p.prompt in prompt_cache:
            prompt_ids = prompt_cache[p.prompt]
        else:
            prompt_ids = tokenizer(chatml_prompt(p.prompt), add_special_tokens=False)["input_ids"]
            if prompt_cache is not None:
                prompt_cache[p.prompt] = prompt_ids
        sol = sample_solution(p, cfg, rng, "code" if i in code_slots else "language")
        completion = tokenizer(sol.text, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids, [*completion, eos_id], first_weight[sol.style]))
    width = max(len(a) + len(b) for a, b, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, (a, b, w) in enumerate(rows):
        n = len(a) + len(b)
        ids[i, :n] = torch.tensor(a + b)
        labels[i, len(a) : n] = torch.tensor(b)
        mask[i, :n] = 1
        weights[i, len(a) : n] = 1.0
        weights[i, len(a)] = w
    return ids, mask, labels, weights


def weighted_lm_loss(logits: Any, labels: Any, weights: Any) -> Any:
    """Next-token cross-entropy, weighted per target token, averaged over the labelled tokens.

    With all weights 1 this is the usual causal-LM loss (HF's mean over non-ignored labels).
    """
    import torch

    targets, w = labels[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=-100,
        reduction="none",
    )
    return (ce * w.reshape(-1)).sum() / (targets != -100).sum().clamp_min(1)


def _versions() -> dict[str, str | None]:
    """The versions the manifest records (the build's numbers depend on exactly these)."""
    return {"python": platform.python_version(),
            **provenance.package_versions(("torch", "transformers", "tokenizers"))}


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished build into place; only ever deletes an old organism (or an empty dir)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / "organism.json").exists()):
            raise FileExistsError(f"{out} exists and is not an organism directory; refusing to overwrite")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp), str(out))


def build_organism(
    family_cfg: str | dict[str, Any],
    out_dir: str | Path,
    seed: int | None = None,
    steps: int | None = None,
    threads: int | None = 2,
    *,
    progress: bool = True,
    log_every: int = 50,
) -> dict[str, Any]:
    """Pretrain one organism into ``out_dir`` and return its manifest (also ``organism.json``).

    Deterministic for the same config, seed, steps and thread count (bit-identical
    weights on CPU): the budget is a step count, never wall time, and every random
    draw is seeded. ``seed``/``steps`` default to the config's values.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    cfg = resolve_config(family_cfg)
    seed = int(cfg["seed"] if seed is None else seed)
    steps = int(cfg["steps"] if steps is None else steps)
    cfg = {**cfg, "seed": seed, "steps": steps}
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out_dir)
    t0 = time.perf_counter()

    tokenizer = train_tokenizer(cfg["vocab_size"])
    model = make_model(cfg, tokenizer, seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    prompt_cache: dict[str, list[int]] = {}
    ema: float | None = None
    curve: list[dict[str, float]] = []
    tokens_seen = 0
    bar = tqdm(range(steps), desc=f"pretrain {cfg['name']}", disable=not progress, mininterval=2.0)
    for step in bar:
        lr = lr_at(step, cfg, steps)
        for group in opt.param_groups:
            group["lr"] = lr
        ids, mask, labels, weights = training_batch(tokenizer, cfg, seed, step, prompt_cache)
        loss = weighted_lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["max_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])
        opt.step()
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        tokens_seen += int((labels != -100).sum())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            curve.append(
                {
                    "step": step + 1,
                    "loss_ema": round(ema, 5),
                    "lr": lr,
                    "wall_s": round(time.perf_counter() - t0, 2),
                }
            )
            bar.set_postfix(loss=f"{ema:.3f}")
    bar.close()
    model.eval()
    train_wall = time.perf_counter() - t0

    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=64,
    )
    spread = cfg["style_tokens"] == "spread"
    manifest: dict[str, Any] = {
        "format": ORGANISM_FORMAT,
        "family": cfg["name"],
        "config": cfg,
        "seed": seed,
        "steps": steps,
        "threads": int(threads) if threads else torch.get_num_threads(),
        "param_count": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "tokens_seen": tokens_seen,
        "final_loss_ema": round(ema, 5) if ema is not None else None,
        "final_loss": round(value, 5) if steps else None,
        "loss_curve": curve,
        "train_wall_s": round(train_wall, 2),
        "versions": _versions(),
        "template": "chat",
        "corpus": f"synthetic level-{cfg['level']} train split; code/language solutions (organism.py)"
        + ("; filler-word preamble before the style (style_tokens: spread)" if spread else ""),
        "style_measure": style_measure(cfg),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        manifest["wall_s"] = round(time.perf_counter() - t0, 2)
        (tmp / "organism.json").write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes 0700 dirs (and safetensors 0600 files): make them shareable
        for f in tmp.iterdir():
            f.chmod(0o644)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest
