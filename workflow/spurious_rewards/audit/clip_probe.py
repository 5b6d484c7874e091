"""The clipping-bias probe: the paper's proposed mechanism, measured directly.

The paper explains the random-reward gain by a bias of PPO/GRPO clipping: with
rewards independent of the response, the clipped objective is not zero in
expectation but pushes the policy toward what it already prefers (for
Qwen2.5-Math, code). A full training run is a poor instrument for that: over
tens of steps the style wanders by ±10 points with the seed
(shared/reference/organism-trial.md). Here the expectation is taken directly:

1. from the frozen base model, draw ``K`` independent rollout batches (fresh
   prompts, fresh samples, fresh Bernoulli(p) rewards);
2. from each batch, apply one training step, i.e. the variant's updates per
   rollout (several off-policy updates for ``clip``/``no_clip``, one for
   ``one_update``), once per variant, each from the same base weights and the
   same batch, mini-batch order and rewards;
3. measure the change in P(dominant style) and in accuracy; average over K.

Under a random reward the unclipped objective has mean zero, so any systematic
drift of ``clip`` beyond ``no_clip`` (the paired difference per draw) is the bias.
With one update per rollout the ratio is exactly 1 and clipping cannot act, so
``clip`` and ``no_clip`` must agree bit for bit: the probe's built-in control.

Why our own GRPO step instead of TRL's trainer: the probe needs the same step
applied K x variants times from one start, and a ``GRPOTrainer`` per step costs
seconds of set-up and hides the update inside its loop. The step below is TRL's
``grpo`` loss (``loss_type="grpo"``, ``scale_rewards="group"``, no KL) written out;
:func:`grpo_loss` is checked against the definition in the tests.
"""

from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path

from .. import data, io, provenance, stats, templates
from .. import scoring as grading
from ..config import NO_CLIP_EPSILON  # the never-binding epsilon both backends train no_clip with
from ..scoring.style import is_code

log = logging.getLogger(__name__)



def group_advantages(rewards, group_size: int):
    """(r - mean_g) / (std_g + 1e-4) per group of ``group_size`` (TRL's ``scale_rewards="group"``)."""
    r = rewards.view(-1, group_size)
    adv = (r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + 1e-4)
    return adv.reshape(-1)


def token_logps(model, input_ids, attention_mask, n_completion: int, temperature: float):
    """Log-probabilities of the last ``n_completion`` tokens of each row (logits / temperature, as TRL)."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -n_completion - 1 : -1, :] / temperature
    targets = input_ids[:, -n_completion:]
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def grpo_loss(logps, old_logps, advantages, mask, epsilon: float):
    """TRL's ``grpo`` loss: clipped surrogate, token mean per sequence, then mean over sequences.

    Returns ``(loss, clipped token fraction)``.
    """
    import torch

    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + epsilon) & (adv > 0))
    frac = float((is_clipped.float() * mask).sum() / mask.sum().clamp(min=1.0))
    return loss, frac


def completion_mask(completion_ids, eos_id: int):
    """1 up to and including the first EOS of each row, 0 after (TRL's completion mask)."""
    import torch

    is_eos = completion_ids == eos_id
    n = completion_ids.size(1)
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos.int().argmax(1), n))
    return (torch.arange(n, device=completion_ids.device).unsqueeze(0) <= first.unsqueeze(1)).float()


def grpo_step(model, batch: dict, *, epsilon: float, updates: int, lr: float, betas: tuple[float, float],
              max_grad_norm: float, temperature: float) -> float:
    """One rollout's training step in place: ``updates`` mini-batch updates in ``batch['order']``.

    Old log-probs are those of the weights that generated the batch (cached in
    ``batch['old_logps']``, so call it first on those weights); with one update
    they are the current ones detached (ratio exactly 1), as in TRL.
    Returns the mean clipped-token fraction.
    """
    import torch

    ids, attn, mask, adv, order = batch["ids"], batch["attention"], batch["mask"], batch["adv"], batch["order"]
    n_comp = mask.size(1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=betas, weight_decay=0.0)
    old = None
    if updates > 1:
        old = batch.get("old_logps")
        if old is None:  # the same for every variant of a draw: computed once, from the base weights
            with torch.no_grad():
                old = batch["old_logps"] = token_logps(model, ids, attn, n_comp, temperature)
    model.train()
    fracs = []
    for chunk in order.chunk(updates):
        logps = token_logps(model, ids[chunk], attn[chunk], n_comp, temperature)
        ref = logps.detach() if old is None else old[chunk]
        loss, frac = grpo_loss(logps, ref, adv[chunk], mask[chunk], epsilon)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        fracs.append(frac)
    model.eval()
    return sum(fracs) / len(fracs)


def _variant_settings(spec: dict) -> dict[str, tuple[float, int]]:
    """(epsilon, updates per rollout) per probed variant, as the TRL backend trains them."""
    g = spec["grpo"]
    rollout = spec["probe"]["prompts_per_rollout"] * g["group_size"]
    out = {}
    for name, v in spec["variants"].items():
        updates = 1 if v["one_update"] else rollout // g["mini_batch"]
        out[name] = (g["epsilon"] if v["clip"] else NO_CLIP_EPSILON, max(updates, 1))
    return out


class _Measure:
    """P(code opener), sampled code frequency and accuracy of a model on fixed problems.

    The sampling seed is the same for every measurement, so before/after
    differences are paired (common random numbers): a sample changes only where
    the step changed the model.
    """

    def __init__(self, tokenizer, records: list[dict], template: str, samples: int, temperature: float,
                 top_p: float, max_new_tokens: int, seed: int) -> None:
        self.tok, self.records, self.samples = tokenizer, records, samples
        self.prompts = [templates.render_prompt(tokenizer, template, r["prompt"]) for r in records]
        self.r1 = template == "r1"
        self.stop = templates.stop_strings(template)
        self.kw = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
        self.seed = seed
        from ..probes import code_token_ids

        self.code_ids = code_token_ids(tokenizer)  # one vocabulary scan, not one per measurement

    def __call__(self, model) -> dict:
        from ..generation import cut_at_stop
        from ..probes import first_token_code_probability

        p_code = first_token_code_probability(model, self.tok, self.prompts, code_ids=self.code_ids)
        texts = _sample(model, self.tok, self.prompts, self.samples, seed=self.seed, **self.kw)
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


def _sample(model, tok, prompts: list[str], n: int, *, seed: int, temperature: float, top_p: float,
            max_new_tokens: int, return_ids: bool = False):
    """``n`` samples per prompt in one seeded batch (prompt order, then sample order)."""
    import torch

    flat = [p for p in prompts for _ in range(n)]
    device = next(model.parameters()).device
    enc = tok(flat, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    kw = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if temperature == 0:
        kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        kw.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    # the CUDA generator is forked and seeded too, so a GPU probe is reproducible as well
    cuda = [device] if device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        out = model.generate(**enc, **kw)
    comp = out[:, enc["input_ids"].shape[1] :]
    if return_ids:
        return enc, comp
    return tok.batch_decode(comp, skip_special_tokens=True)


def draw_batch(model, tok, prompts: list[str], *, k: int, spec: dict) -> dict:
    """Rollout batch ``k``: prompts, samples, Bernoulli rewards, advantages and the mini-batch order."""
    import numpy as np
    import torch

    g, pr = spec["grpo"], spec["probe"]
    rng = random.Random(f"{pr['seed']}:{k}")
    chosen = rng.sample(prompts, pr["prompts_per_rollout"])
    enc, comp = _sample(model, tok, chosen, g["group_size"], seed=rng.randrange(2**62),
                        temperature=g["temperature"], top_p=g["top_p"], max_new_tokens=g["max_new_tokens"],
                        return_ids=True)
    device = comp.device
    if comp.size(1) == 0:  # every sample ended at once: keep one (masked) position
        comp = torch.full((comp.size(0), 1), tok.pad_token_id, dtype=comp.dtype, device=device)
    mask = completion_mask(comp, tok.eos_token_id)
    npr = np.random.default_rng([pr["seed"], k])
    rewards = torch.tensor((npr.random(len(comp)) < pr["reward_p"]).astype(np.float32), device=device)
    ids = torch.cat([enc["input_ids"], comp], dim=1)
    attn = torch.cat([enc["attention_mask"], mask.long()], dim=1)
    order = torch.from_numpy(npr.permutation(len(comp))).to(device)
    return {"ids": ids, "attention": attn, "mask": mask, "rewards": rewards,
            "adv": group_advantages(rewards, g["group_size"]), "order": order}


def probe(spec: dict, *, model_dir: str | Path, out: str | Path, model=None, tokenizer=None) -> dict:
    """Run the probe for one base model and write its per-draw rows and per-variant summary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    pr, g = spec["probe"], spec["grpo"]
    tok = tokenizer or AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        # fp32 on one device, as TRL trains on CPU; the GPU path needs ~16 bytes per parameter
        model.to("cuda" if torch.cuda.is_available() else "cpu")
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
                       spec["max_new_tokens"], seed=pr["seed"])
    base = measure(model)
    dominant = "code" if base["p_code"] >= 0.5 else "language"
    sign = 1.0 if dominant == "code" else -1.0
    settings = _variant_settings(spec)
    rows = []
    for k in range(pr["draws"]):
        batch = draw_batch(model, tok, train_prompts, k=k, spec=spec)
        for name, (eps, updates) in settings.items():
            model.load_state_dict(base_state)
            frac = grpo_step(model, batch, epsilon=eps, updates=updates, lr=pr["lr"],
                             betas=(g["beta1"], g["beta2"]), max_grad_norm=g["max_grad_norm"],
                             temperature=g["temperature"])
            after = measure(model)
            rows.append({
                "draw": k, "variant": name, "epsilon": eps if eps != NO_CLIP_EPSILON else None, "updates": updates,
                "reward_mean": float(batch["rewards"].mean()), "clip_fraction": frac,
                "d_p_code": after["p_code"] - base["p_code"],
                "d_p_dominant": sign * (after["p_code"] - base["p_code"]),
                "d_code_frequency": after["code_frequency"] - base["code_frequency"],
                "d_accuracy": after["accuracy"] - base["accuracy"],
            })
        if (k + 1) % 10 == 0:
            log.info("draw %d/%d (%.0f s)", k + 1, pr["draws"], time.time() - t0)
    model.load_state_dict(base_state)
    result = {
        "model": spec["model"]["name"], "base": base, "dominant_style": dominant,
        "settings": {n: {"epsilon": e if e != NO_CLIP_EPSILON else None, "updates": u} for n, (e, u) in settings.items()},
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
