"""The clipping-bias probe: the paper's proposed mechanism, measured directly.

The paper explains the random-reward gain by a bias of PPO/GRPO clipping: with
rewards independent of the response, the clipped objective is not zero in
expectation but pushes the policy toward what it already prefers (for
Qwen2.5-Math, code). A full training run is a poor instrument for that: over
tens of steps the style wanders by ±10 points with the seed. Here the
expectation is taken directly:

1. from the frozen base model, draw ``K`` independent rollout batches (fresh
   prompts, fresh samples, fresh Bernoulli(p) rewards); the base weights are
   restored before every draw, so draw ``k`` is the same whatever the variants;
2. from each batch, apply one training step, i.e. the variant's updates per
   rollout (several off-policy updates for ``clip``/``no_clip``, one for
   ``one_update``), once per variant, each from the same base weights and the
   same batch, mini-batch order, rewards and RNG stream;
3. measure the change in P(dominant style) and in accuracy; average over K.

Under a random reward the unclipped objective has mean zero, so any systematic
drift of ``clip`` beyond ``no_clip`` (the paired difference per draw) is the bias.
With one update per rollout the ratio is exactly 1 and clipping cannot act, so
``clip`` and ``no_clip`` must agree bit for bit: the probe's built-in control.

The style measure (``audit.clip_probe.style``). For the organisms the code/language
choice is the first completion token, so P(first token opens a code fence) is an
exact, noise-free measure. Real models write prose before their code, so that
probability is about 0 for them and says nothing; there the measure is the sampled
code frequency, the paper's own classifier (``scoring.style.is_code``: "python" in the
response). ``auto`` picks the first for organisms (a model entry with an
``organism:`` block, or a model directory holding the ``organism.json`` manifest
that organism pre-training writes) and the second otherwise, with one exception:
an organism built with ``style_tokens: spread`` opens every answer with filler
words and shows its style only several uncertain tokens later, like a real model,
so its first token says nothing about the style and ``auto`` takes the code
frequency for it too (read from the entry's ``organism:`` block, else from the
manifest's ``style_measure``). Dominance ("code" when
the base model's measure is >= 0.5) and ``d_p_dominant`` use the chosen measure.

Memory. The probe must run at paper scale (1,024 sequences of up to
4,096 tokens and a 152k vocabulary). Nothing is computed for the whole rollout at
once: rollouts and measurement samples are generated ``generation_batch``
sequences per ``generate`` call (KV cache), and every forward pass, with or
without gradient, takes ``micro_batch`` sequences, runs the LM head on the
completion positions only (``logits_to_keep``) and gathers the completion tokens'
log-probs after a per-row logsumexp (TRL's ``selective_log_softmax``), so a
full-vocabulary log-softmax exists for at most one sequence at a time. Each
mini-batch update accumulates its micro-batches' gradients before the one
optimizer step, with the loss weights that make the sum equal the mini-batch
loss; logits stay in the model's dtype (bf16 for a bf16 model, where
``selective_log_softmax`` falls back to its row-wise, stable path). With
``micro_batch`` and ``generation_batch`` equal to the whole rollout the probe
computes what the unbatched probe did; smaller micro-batches change the numbers
only by float rounding (tested). A smaller ``generation_batch`` draws different
(equally valid, seeded) samples, because one RNG stream is consumed batch by
batch; the draw is still made once and shared by every variant, so the pairing
is exact whatever the sizes. The weights stay fp32 (about 16 bytes per parameter
with the gradient and AdamW's moments): in bf16 an update of lr 5e-7 relative
size is below the format's resolution and would be lost.

The optimizer. Every step builds a fresh AdamW (zero moments), as the first
step of a run does. Adam's first update is then close to ``lr * sign(g)`` per
parameter, not the update a mid-training optimizer state would give (the moments
there average many past gradients). The probe therefore measures the bias of the
first step from the base model, which is what it claims; it is not a measurement
of the per-step bias late in training.

Why our own GRPO step instead of TRL's trainer: the probe needs the same step
applied K x variants times from one start, and a ``GRPOTrainer`` per step costs
seconds of set-up and hides the update inside its loop. The step below is TRL's
``grpo`` loss (``loss_type="grpo"``, ``scale_rewards="group"``, no KL) written out;
:func:`grpo_loss` is checked against the definition in the tests.

The rollout engine (``audit.clip_probe.engine``): :class:`HFRollout` samples token ids
from the in-memory base model; :class:`VLLMRollout` (``auto`` on a GPU with vLLM
installed) samples them with vLLM, which loads the base weights once and never needs
a sync, since the probe samples only from them. The measurement samples are drawn from
the stepped weights, which a vLLM engine would have to reload after every step, so
they stay with HF ``generate`` whatever the engine.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from .. import data, io, provenance, stats, templates
from .. import scoring as grading
from ..config import (  # the never-binding epsilon both backends train no_clip with
    NO_CLIP_EPSILON,
    variant_settings,
)
from ..config import organism_style_measure as organism_style_measure_of
from ..grpo_math import completion_mask
from ..scoring.style import is_code

log = logging.getLogger(__name__)

STYLES = ("auto", "first_token", "code_frequency")


# ----------------------------------------------------------------------------- the GRPO step


def group_advantages(rewards, group_size: int):
    """(r - mean_g) / (std_g + 1e-4) per group of ``group_size`` (TRL's ``scale_rewards="group"``)."""
    r = rewards.view(-1, group_size)
    adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


def token_logps(model, input_ids, attention_mask, n_completion: int, temperature: float):
    """Log-probabilities of the last ``n_completion`` tokens of each row (logits / temperature, as TRL).

    Only the completion positions go through the LM head (``logits_to_keep``), and
    the log-probs are gathered after a logsumexp per sequence, never from a
    full-vocabulary ``log_softmax`` of the whole batch. Meant for one micro-batch. The
    logits stay in the model's dtype; the per-token log-probs (micro x tokens, small)
    are returned in fp32, so the ratio of a bf16 model is not rounded to bf16 again.
    """
    from trl.trainer.utils import selective_log_softmax

    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=n_completion + 1).logits
    return selective_log_softmax(logits[:, :-1, :], input_ids[:, -n_completion:], temperature=temperature).float()


def rollout_logps(model, ids, attention, n_completion: int, temperature: float, micro_batch: int):
    """:func:`token_logps` of every row without gradient, ``micro_batch`` rows per forward pass."""
    import torch

    with torch.no_grad():
        parts = [token_logps(model, ids[i : i + micro_batch], attention[i : i + micro_batch], n_completion,
                             temperature) for i in range(0, ids.size(0), micro_batch)]
    return torch.cat(parts)


def _grpo_terms(logps, old_logps, advantages, mask, epsilon: float, epsilon_high: float | None = None):
    """Per-sequence token-mean loss, clipped-token count and token count (tensors).

    The ratio is clipped to ``[1 - epsilon, 1 + epsilon_high]`` (``epsilon_high`` None:
    symmetric; DAPO's clip-higher raises only the upper bound, as TRL's ``epsilon_high``).
    """
    import torch

    high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
    return per_seq, (is_clipped.float() * mask).sum(), mask.sum()


def grpo_loss(logps, old_logps, advantages, mask, epsilon: float, epsilon_high: float | None = None):
    """TRL's ``grpo`` loss: clipped surrogate, token mean per sequence, then mean over sequences.

    Returns ``(loss, clipped token fraction)``.
    """
    per_seq, n_clipped, n_tokens = _grpo_terms(logps, old_logps, advantages, mask, epsilon, epsilon_high)
    return per_seq.mean(), float(n_clipped / n_tokens.clamp(min=1.0))


def grpo_step(model, batch: dict, *, epsilon: float, updates: int, lr: float, betas: tuple[float, float],
              max_grad_norm: float, temperature: float, micro_batch: int | None = None,
              epsilon_high: float | None = None) -> float:
    """One rollout's training step in place: ``updates`` mini-batch updates in ``batch['order']``.

    Each mini-batch is fed ``micro_batch`` sequences at a time (None: all at once);
    the gradients of its micro-batches add up, each loss weighted by its share of
    the mini-batch's sequences, so the accumulated gradient is that of the
    mini-batch loss. Old log-probs are those of the weights that generated the batch
    (cached in ``batch['old_logps']``, so call it first on those weights); with one
    update they are the current ones detached (ratio exactly 1), as in TRL.
    Returns the mean clipped-token fraction of the updates.
    """
    import torch

    ids, attn, mask, adv, order = batch["ids"], batch["attention"], batch["mask"], batch["adv"], batch["order"]
    n_comp = mask.size(1)
    micro = int(micro_batch or ids.size(0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=0.0)
    old = None
    if updates > 1:
        old = batch.get("old_logps")
        if old is None:  # the same for every variant of a draw: computed once, from the base weights
            old = batch["old_logps"] = rollout_logps(model, ids, attn, n_comp, temperature, micro)
    model.train()
    fracs = []
    for mini in order.chunk(updates):
        opt.zero_grad(set_to_none=True)
        n_clipped = n_tokens = 0.0
        for part in mini.split(micro):
            logps = token_logps(model, ids[part], attn[part], n_comp, temperature)
            ref = logps.detach() if old is None else old[part]
            per_seq, c, t = _grpo_terms(logps, ref, adv[part], mask[part], epsilon, epsilon_high)
            # the mean over the mini-batch as a sum of micro-batch terms (one term: exactly the mean)
            loss = per_seq.mean() if len(part) == len(mini) else per_seq.sum() / len(mini)
            loss.backward()
            n_clipped, n_tokens = n_clipped + c, n_tokens + t
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        fracs.append(float(n_clipped / n_tokens.clamp(min=1.0)))
    opt.zero_grad(set_to_none=True)  # free the gradients before the next measurement
    model.eval()
    return sum(fracs) / len(fracs)


def _variant_settings(spec: dict) -> dict[str, tuple[float, int, float]]:
    """(epsilon, updates per rollout, epsilon_high) per probed variant: ``config.variant_settings``,
    the arithmetic both training backends use, on the probe's rollout size."""
    out = {}
    for name, v in spec["variants"].items():
        s = variant_settings(spec["grpo"], v, prompts_per_rollout=spec["probe"]["prompts_per_rollout"])
        out[name] = (s.epsilon, s.updates, s.epsilon_high)
    return out


def batch_sizes(spec: dict) -> tuple[int, int | None]:
    """(micro_batch, generation_batch) of the probe, with their fall-backs resolved.

    ``audit.clip_probe.micro_batch`` null = ``grpo.micro_batch`` (the training
    memory knob); ``generation_batch`` null stays None: every ``generate`` call
    samples all its sequences at once (the whole rollout, all measurement samples).
    """
    pr, g = spec["probe"], spec["grpo"]
    rollout = pr["prompts_per_rollout"] * g["group_size"]
    out = []
    for key, fallback in (("micro_batch", g.get("micro_batch") or rollout), ("generation_batch", None)):
        value = pr.get(key)
        if value is None:
            out.append(fallback)
        elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"audit.clip_probe.{key}: {value!r}; allowed: an integer >= 1, or null")
        else:
            out.append(value)
    return out[0], out[1]


def is_organism(model_entry: dict, model_dir: str | Path) -> bool:
    """A model organism: its config entry has an ``organism:`` block, or its directory the manifest."""
    return bool(model_entry.get("organism")) or (Path(model_dir) / "organism.json").is_file()


def organism_style_measure(model_entry: dict, model_dir: str | Path) -> str:
    """The style measure an organism's corpus calls for (``organisms.build.style_measure``).

    The config's ``organism:`` block decides when there is one (what the build is told);
    otherwise the manifest's ``style_measure``, which manifests written before the
    ``style_tokens`` option lack: those organisms all decide their style by the first token.
    """
    block = model_entry.get("organism")
    if block:
        return organism_style_measure_of(block)
    manifest = Path(model_dir) / "organism.json"
    return str(io.read_json(manifest).get("style_measure", "first_token"))


def style_measure(spec: dict, model_dir: str | Path) -> str:
    """``first_token`` or ``code_frequency``: ``audit.clip_probe.style``, ``auto`` resolved (module docstring)."""
    choice = spec["probe"].get("style") or "auto"
    if choice not in STYLES:
        raise ValueError(f"audit.clip_probe.style: {choice!r}; allowed: {', '.join(STYLES)}")
    if choice != "auto":
        return choice
    if not is_organism(spec["model"], model_dir):
        return "code_frequency"
    return organism_style_measure(spec["model"], model_dir)


# ----------------------------------------------------------------------------- sampling


class HFRollout:
    """Seeded sampling of token ids with HF ``generate`` on an in-memory model, in batches.

    The engine seam of the probe: :meth:`sample` returns the batches it generated,
    each ``(prompt ids, prompt attention mask, completion ids)`` with left-padded
    prompts, in prompt-then-sample order (``batch_size`` None: one call for all).
    Decoding is :func:`generation.sample_ids` (``generate``'s sampling; finished rows
    leave the batch). One RNG stream is seeded once per call and consumed batch by
    batch, so the same seed and batch size reproduce the same samples, and the CUDA
    generator is forked and seeded too.
    """

    def __init__(self, model, tokenizer, batch_size: int | None = None) -> None:
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size

    def sample(self, prompts: list[str], n: int, *, seed: int, temperature: float, top_p: float,
               max_new_tokens: int) -> list[tuple[Any, Any, Any]]:
        import torch

        from ..generation import sample_ids

        tok = self.tok
        flat = [p for p in prompts for _ in range(n)]
        device = next(self.model.parameters()).device
        kw = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
              "temperature": float(temperature), "top_p": float(top_p)}
        out = []
        cuda = [device] if device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            step = self.batch_size or len(flat)  # None: one call for all
            for i in range(0, len(flat), step):
                enc = tok(flat[i : i + step], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(device)
                ids = sample_ids(self.model, enc["input_ids"], enc["attention_mask"], **kw)
                out.append((enc["input_ids"], enc["attention_mask"], ids))
        return out


#: The share of the GPU the probe's vLLM engine reserves (``audit.clip_probe.vllm_memory`` overrides
#: it): bf16 weights, vLLM's overhead and the KV cache, beside the fp32 training copy on the same
#: card. The engine sleeps (weights to host memory, KV cache freed) while the probe steps and
#: measures, so the share is needed only during the rollouts (plan.estimate_probe).
VLLM_MEMORY_UTILIZATION = 0.3

ENGINES = ("auto", "hf", "vllm")


class VLLMRollout:
    """Seeded sampling of token ids with vLLM, the :class:`HFRollout` contract (the GPU path at scale).

    The probe samples only from the frozen base weights, so the engine loads them once,
    from ``model_dir``, and never needs a weight sync; the measurement samples come from
    stepped weights and stay with HF ``generate`` (:class:`_Measure`).

    Token ids in, token ids out: the prompts are tokenised here exactly as :class:`HFRollout`
    does (left padding, ``add_special_tokens=False``) and vLLM gets the ids, never the
    text (vLLM would tokenise text with special tokens: a second BOS for Llama tokenizers).
    Each of the ``len(prompts) x n`` sequences is its own request with its own seed
    (``seed + index``), so a sample does not depend on the batch around it. vLLM's own
    ``n`` is not used: its children are seeded ``seed + child index``, which would give
    sample ``j + 1`` of one prompt and sample ``j`` of the next the same random stream.
    Stopping is HF's: only the tokenizer's EOS ends a sequence (``ignore_eos`` switches
    off vLLM's own EOS and generation-config stop ids, ``stop_token_ids`` puts that one
    back), and the EOS is kept in the completion, padded after it with the pad id, so
    :func:`completion_mask` and :func:`assemble` read both engines' batches alike.
    ``generation_batch`` does not apply: vLLM takes the whole rollout as one call and
    schedules it within its KV cache (one batch is returned).

    On a GPU the engine is created with sleep mode: between rollouts it sleeps (level 1:
    weights copied to host memory, KV cache freed), so the probe's AdamW step has the
    card; before a rollout the trainer's cached blocks are released and the engine
    wakes up. ``gpu_memory_utilization`` is vLLM's share while awake. On vLLM's CPU
    backend (tests) :class:`~spurious_rewards.generation.VLLMEngine`'s CPU defaults apply
    (fp32, eager, a fixed KV cache) and nothing sleeps.
    """

    def __init__(self, model_dir: str | Path, tokenizer, *, max_model_len: int, seed: int = 0,
                 gpu_memory_utilization: float = VLLM_MEMORY_UTILIZATION, **llm_kwargs: Any) -> None:
        from vllm.platforms import current_platform

        from ..generation import VLLMEngine

        self.tok = tokenizer
        self.sleeps = bool(current_platform.is_cuda())
        if self.sleeps:
            llm_kwargs.setdefault("enable_sleep_mode", True)
        self.engine = VLLMEngine(model_dir, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                                 max_model_len=max_model_len, progress=False, **llm_kwargs)
        if self.sleeps:
            self.engine.llm.sleep(level=1)

    def sample(self, prompts: list[str], n: int, *, seed: int, temperature: float, top_p: float,
               max_new_tokens: int) -> list[tuple[Any, Any, Any]]:
        import torch
        from vllm import SamplingParams

        tok = self.tok
        enc = tok(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
        p_ids = enc["input_ids"].repeat_interleave(n, dim=0)
        p_attn = enc["attention_mask"].repeat_interleave(n, dim=0)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"], strict=True)]
        requests = [{"prompt_token_ids": r} for r in rows for _ in range(n)]
        params = [SamplingParams(n=1, temperature=float(temperature), top_p=1.0 if temperature == 0 else float(top_p),
                                 top_k=0, max_tokens=int(max_new_tokens), seed=int(seed) + i, ignore_eos=True,
                                 stop_token_ids=[tok.eos_token_id], detokenize=False)
                  for i in range(len(requests))]
        if self.sleeps:
            torch.cuda.empty_cache()  # the trainer's cached blocks back to the driver, for vLLM's share
            self.engine.llm.wake_up()
        try:
            outputs = self.engine.llm.generate(requests, params, use_tqdm=False)
        finally:
            if self.sleeps:
                self.engine.llm.sleep(level=1)
        comps = [list(o.outputs[0].token_ids) for o in outputs]
        width = max(1, max(len(c) for c in comps))
        comp = torch.full((len(comps), width), tok.pad_token_id, dtype=p_ids.dtype)
        for i, c in enumerate(comps):
            comp[i, : len(c)] = torch.tensor(c, dtype=p_ids.dtype)
        return [(p_ids, p_attn, comp)]


def rollout_engine_name(spec: dict) -> str:
    """``hf`` or ``vllm``: ``audit.clip_probe.engine`` with ``auto`` resolved (vLLM when importable and
    a GPU is present); ``vllm`` without vLLM installed is an error, not a silent fall-back."""
    import importlib.util

    from ..generation import vllm_available

    choice = spec["probe"].get("engine") or "auto"
    if choice not in ENGINES:
        raise ValueError(f"audit.clip_probe.engine: {choice!r}; allowed: {', '.join(ENGINES)}")
    if choice == "vllm" and importlib.util.find_spec("vllm") is None:
        raise RuntimeError("audit.clip_probe.engine: vllm, but vllm is not importable in this environment "
                           "(install it, e.g. envs/pipeline-gpu.yaml, or set engine: hf / auto)")
    if choice == "auto":
        return "vllm" if vllm_available() else "hf"
    return choice


def rollout_engine(spec: dict, model_dir: str | Path, model, tokenizer, generation_batch: int | None):
    """The rollout engine of the probe: :class:`VLLMRollout` (loads ``model_dir``) or :class:`HFRollout`."""
    if rollout_engine_name(spec) == "hf":
        return HFRollout(model, tokenizer, generation_batch)
    g, pr = spec["grpo"], spec["probe"]
    return VLLMRollout(model_dir, tokenizer, max_model_len=g["max_prompt_tokens"] + g["max_new_tokens"],
                       seed=pr["seed"], gpu_memory_utilization=pr.get("vllm_memory") or VLLM_MEMORY_UTILIZATION)


def assemble(batches: list[tuple[Any, Any, Any]], pad_id: int, eos_id: int) -> dict:
    """One rollout tensor from generated batches: prompts left-padded, completions right-padded.

    Returns ``ids`` (prompt + completion), ``attention`` and ``mask`` (the completion
    mask, computed per batch before padding, so a row that ran to the length limit
    never takes a pad for its EOS).
    """
    import torch
    import torch.nn.functional as F

    n_prompt = max(b[0].size(1) for b in batches)
    n_comp = max(max(b[2].size(1) for b in batches), 1)  # at least one (masked) position
    ids, attn, mask = [], [], []
    for p_ids, p_attn, comp in batches:
        left, right = n_prompt - p_ids.size(1), n_comp - comp.size(1)
        c_mask = F.pad(completion_mask(comp, eos_id), (0, right), value=0.0)
        ids.append(torch.cat([F.pad(p_ids, (left, 0), value=pad_id), F.pad(comp, (0, right), value=pad_id)], 1))
        attn.append(torch.cat([F.pad(p_attn, (left, 0), value=0), c_mask.long()], 1))
        mask.append(c_mask)
    return {"ids": torch.cat(ids), "attention": torch.cat(attn), "mask": torch.cat(mask)}


class _Measure:
    """P(code opener), sampled code frequency and accuracy of a model on fixed problems.

    The sampling seed is the same for every measurement, so before/after
    differences are paired (common random numbers): a sample changes only where
    the step changed the model. The samples use HF ``generate`` whatever
    ``audit.clip_probe.engine``: they come from the stepped weights, which a vLLM
    engine would have to reload after every step.
    """

    def __init__(self, tokenizer, records: list[dict], template: str, samples: int, temperature: float,
                 top_p: float, max_new_tokens: int, seed: int, *, micro_batch: int,
                 generation_batch: int | None) -> None:
        self.tok, self.records, self.samples = tokenizer, records, samples
        self.prompts = [templates.render_prompt(tokenizer, template, r["prompt"]) for r in records]
        self.r1 = templates.is_r1(template)
        self.stop = templates.stop_strings(template)
        self.kw = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        self.seed, self.micro_batch, self.generation_batch = seed, micro_batch, generation_batch
        from ..probes import code_token_ids

        self.code_ids = code_token_ids(tokenizer)  # one vocabulary scan, not one per measurement

    def __call__(self, model) -> dict:
        from ..generation import cut_at_stop
        from ..probes import first_token_code_probability

        p_code = first_token_code_probability(model, self.tok, self.prompts, batch_size=self.micro_batch,
                                              code_ids=self.code_ids)
        engine = HFRollout(model, self.tok, self.generation_batch)
        batches = engine.sample(self.prompts, self.samples, seed=self.seed, **self.kw)
        texts = [t for b in batches for t in self.tok.batch_decode(b[2], skip_special_tokens=True)]
        if self.stop:
            texts = [cut_at_stop(t, self.stop) for t in texts]
        answers = [r["answer"] for r in self.records for _ in range(self.samples)]
        preds = [grading.extract_answer(t, r1=self.r1) for t in texts]
        correct = grading.grade_many(list(zip(preds, answers, strict=True)), workers=1)
        return {
            "p_code": sum(p_code) / len(p_code),
            "code_frequency": sum(is_code(t) for t in texts) / len(texts),
            "accuracy": sum(correct) / len(correct),
        }


def draw_batch(engine: HFRollout | VLLMRollout, tok, prompts: list[str], *, k: int, spec: dict) -> dict:
    """Rollout batch ``k``: prompts, samples, Bernoulli rewards, advantages and the mini-batch order.

    ``fingerprint`` is a hash of the sampled token ids, so a result file shows which
    rows share a draw.
    """
    import numpy as np
    import torch

    g, pr = spec["grpo"], spec["probe"]
    rng = random.Random(f"{pr['seed']}:{k}")
    chosen = rng.sample(prompts, pr["prompts_per_rollout"])
    batches = engine.sample(chosen, g["group_size"], seed=rng.randrange(2**62), temperature=g["temperature"],
                            top_p=g["top_p"], max_new_tokens=g["max_new_tokens"])
    batch = assemble(batches, tok.pad_token_id, tok.eos_token_id)
    n, device = batch["ids"].size(0), batch["ids"].device
    npr = np.random.default_rng([pr["seed"], k])
    rewards = torch.tensor((npr.random(n) < pr["reward_p"]).astype(np.float32), device=device)
    order = torch.from_numpy(npr.permutation(n)).to(device)
    digest = hashlib.sha256(batch["ids"].cpu().numpy().tobytes() + batch["mask"].cpu().numpy().tobytes())
    return {**batch, "rewards": rewards, "adv": group_advantages(rewards, g["group_size"]), "order": order,
            "fingerprint": digest.hexdigest()[:16]}


# ----------------------------------------------------------------------------- the probe


def probe(spec: dict, *, model_dir: str | Path, out: str | Path, model=None, tokenizer=None) -> dict:
    """Run the probe for one base model and write its per-draw rows and per-variant summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    pr, g = spec["probe"], spec["grpo"]
    micro, gen_batch = batch_sizes(spec)
    measure_name = style_measure(spec, model_dir)
    tok = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        # fp32 on one device, as TRL trains on CPU; the GPU path needs ~16 bytes per parameter
        model.to("cuda" if torch.cuda.is_available() else "cpu")
    if pr.get("gradient_checkpointing"):
        # recomputes the forward in backward (no dropout in these models: same numbers, less memory)
        if hasattr(model, "activation_checkpointing_enable"):  # the newer transformers spelling
            model.activation_checkpointing_enable()  # non-reentrant torch.utils.checkpoint
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    model.eval()
    # the base weights stay on the host: restoring them is one copy per variant and draw
    base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    template = spec["model"]["template"]

    max_prompt = g["max_prompt_tokens"]
    train_prompts = [templates.render_prompt(tok, template, r["prompt"]) for r in data.load_records(spec["train_data"])]
    train_prompts = [p for p in train_prompts if len(tok(p, add_special_tokens=False)["input_ids"]) <= max_prompt]
    if len(train_prompts) < pr["prompts_per_rollout"]:
        raise ValueError(f"{spec['train_data']}: {len(train_prompts)} prompts fit grpo.max_prompt_tokens, "
                         f"a rollout needs {pr['prompts_per_rollout']}")
    bench = spec["benchmark"]
    records = data.load_records(bench["data"])[: pr["eval_problems"]]
    measure = _Measure(tok, records, template, pr["eval_samples"], bench["temperature"], bench["top_p"],
                       spec["max_new_tokens"], seed=pr["seed"], micro_batch=micro, generation_batch=gen_batch)
    key = {"first_token": "p_code", "code_frequency": "code_frequency"}[measure_name]
    base = measure(model)
    dominant = "code" if base[key] >= 0.5 else "language"
    sign = 1.0 if dominant == "code" else -1.0
    settings = _variant_settings(spec)
    engine = rollout_engine(spec, model_dir, model, tok, gen_batch)  # after the model: vLLM takes its share of what is left
    device = next(model.parameters()).device
    cuda = [device] if device.type == "cuda" else []
    rows = []
    for k in range(pr["draws"]):
        # every draw comes from the base weights: the previous draw's last variant stepped the model
        model.load_state_dict(base_state)
        batch = draw_batch(engine, tok, train_prompts, k=k, spec=spec)
        for name, (eps, updates, eps_high) in settings.items():
            model.load_state_dict(base_state)
            # the same RNG stream for every variant of a draw (dropout, if a model has any, is paired too)
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(pr["seed"] * 1_000_003 + k)
                frac = grpo_step(model, batch, epsilon=eps, updates=updates, lr=pr["lr"],
                                 betas=(g["beta1"], g["beta2"]), max_grad_norm=g["max_grad_norm"],
                                 temperature=g["temperature"], micro_batch=micro, epsilon_high=eps_high)
            after = measure(model)
            rows.append({
                "draw": k, "variant": name, "epsilon": eps if eps != NO_CLIP_EPSILON else None,
                "epsilon_high": eps_high if eps != NO_CLIP_EPSILON else None, "updates": updates,
                "rollout": batch["fingerprint"],
                "reward_mean": float(batch["rewards"].mean()), "clip_fraction": frac,
                "d_p_code": after["p_code"] - base["p_code"],
                "d_p_dominant": sign * (after[key] - base[key]),
                "d_code_frequency": after["code_frequency"] - base["code_frequency"],
                "d_accuracy": after["accuracy"] - base["accuracy"],
            })
        if (k + 1) % 10 == 0 or k + 1 == pr["draws"]:
            spent = time.time() - t0
            log.info("draw %d/%d (%.0f s, about %.0f s left)", k + 1, pr["draws"], spent,
                     spent / (k + 1) * (pr["draws"] - k - 1))
    model.load_state_dict(base_state)
    if pr.get("gradient_checkpointing"):  # a caller's model is handed back as it came
        if hasattr(model, "activation_checkpointing_disable"):
            model.activation_checkpointing_disable()
        else:
            model.gradient_checkpointing_disable()
    result = {
        "model": spec["model"]["name"], "base": base, "dominant_style": dominant, "style_measure": measure_name,
        "rollout_engine": type(engine).__name__,
        "batching": {"micro_batch": micro, "generation_batch": gen_batch,
                     "gradient_checkpointing": bool(pr.get("gradient_checkpointing"))},
        "settings": {n: {"epsilon": e if e != NO_CLIP_EPSILON else None, "updates": u,
                         "epsilon_high": h if e != NO_CLIP_EPSILON else None} for n, (e, u, h) in settings.items()},
        "lr": pr["lr"],
        "summary": summarize(rows, alpha=spec.get("alpha", 0.05), seed=pr["seed"]),
        "draws": rows, "seconds": round(time.time() - t0, 1),
        "provenance": provenance.provenance(provenance.spec_hash(spec), pr["seed"]),
    }
    io.write_json(result, out)
    return result


METRICS = ("d_p_dominant", "d_p_code", "d_code_frequency", "d_accuracy", "clip_fraction")


def summarize(rows: list[dict], alpha: float = 0.05, seed: int = 0, n_boot: int = 2000) -> list[dict]:
    """Mean and bootstrap CI over draws per (variant, metric), plus each variant minus ``no_clip`` paired by draw."""
    import numpy as np

    variants = list(dict.fromkeys(r["variant"] for r in rows))
    by = {v: sorted((r for r in rows if r["variant"] == v), key=lambda r: r["draw"]) for v in variants}
    out = []
    for v in variants:
        for m in METRICS:
            x = np.array([r[m] for r in by[v]], dtype=float)
            ci = stats.mean_ci(x, n_boot, seed, alpha)
            out.append({"variant": v, "metric": m, "mean": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                        "draws": len(x)})
    if "no_clip" in by:
        ref = {r["draw"]: r for r in by["no_clip"]}
        for v in variants:
            if v == "no_clip":
                continue
            for m in ("d_p_dominant", "d_accuracy"):
                x = np.array([r[m] - ref[r["draw"]][m] for r in by[v] if r["draw"] in ref], dtype=float)
                if len(x):
                    ci = stats.mean_ci(x, n_boot, seed, alpha)
                    out.append({"variant": f"{v} - no_clip", "metric": m, "mean": ci.estimate, "ci_low": ci.low,
                                "ci_high": ci.high, "draws": len(x)})
    return [{k: (None if isinstance(val, float) and math.isnan(val) else val) for k, val in r.items()} for r in out]
