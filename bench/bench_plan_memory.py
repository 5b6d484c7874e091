"""The memory plan's estimates against measured peaks of the real code paths, on CPU.

Not a test (tests/test_plan.py asserts the tolerance on two sizes). Small Qwen2 models
are built from a ``Qwen2Config`` with random weights (no hub), and each case runs the
code path a rule runs:

* ``probe_step``: ``clip_probe.grpo_step`` itself (old log-probs of the whole batch, two
  mini-batch updates with AdamW), on a left-padded batch as the probe draws it;
* ``trl_update``: one micro-batch through TRL's fused LM head (``trl``'s
  ``add_fused_lm_head``, called as GRPOTrainer's ``_get_per_token_logps_and_entropies``
  calls it) and its backward, fp32, padded, no checkpointing, Adam states already there;
* ``ckpt_bf16``: a bf16 forward+backward with gradient checkpointing whose logits are
  cast to fp32 before the log-softmax, the shape of OpenRLHF's actor step (an
  emulation: OpenRLHF itself does not run here);
* ``generate``: ``model.generate`` of a left-padded batch at a fixed length (min = max
  new tokens), as the probe's and TRL's rollouts call it.

How the peak is measured, and why: ``torch.profiler`` with ``profile_memory=True``
records every allocation and free of the CPU allocator as ``[memory]`` events with a
signed size; the running sum of those events, in time order, is the live tensor bytes,
and its maximum is the peak. That is exact and deterministic (the same sizes every
run), counts autograd's saved tensors (which Python-level hooks would miss), and is
not blurred by the allocator's caching or glibc's arenas as an RSS delta is. What it
misses are buffers that bypass torch's allocator (oneDNN scratch, BLAS workspaces),
which are small next to these tensors. The peak reported is the transient one: bytes
allocated during the call above what existed before it (the weights, and in
``trl_update`` the Adam states), compared with the estimate's terms minus those.

    python bench/bench_plan_memory.py [--sizes s m] [--out results/bench/plan_memory.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from spurious_rewards import plan  # noqa: E402

#: Tolerance the tests assert: |estimate / measured - 1| <= this.
TOLERANCE = 0.30

#: Model sizes (Qwen2 shapes with grouped-query attention, as the paper's models).
SIZES: dict[str, dict] = {
    "s": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=256, vocab_size=3000),
    "m": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
              intermediate_size=512, vocab_size=8000),
    "l": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
              intermediate_size=1024, vocab_size=16000),
}
#: Batch shape of every case: sequences, prompt tokens, completion tokens.
BATCH, PROMPT, COMPLETION = 8, 32, 96


def tiny_model(size: str, dtype: str = "float32", seed: int = 0):
    """A random-initialised Qwen2 model of ``SIZES[size]`` and its :class:`plan.Arch`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    kw = {**SIZES[size], "max_position_embeddings": 1024, "tie_word_embeddings": True}
    cfg = Qwen2Config(**kw)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(getattr(torch, dtype))
    arch = plan.arch_from_hf_config({**cfg.to_dict(), **kw, "model_type": "qwen2", "dtype": dtype},
                                    source=f"bench size {size}")
    n = sum(p.numel() for p in model.parameters())
    if n != arch.params:
        raise AssertionError(f"size {size}: plan counts {arch.params} parameters, torch {n}")
    return model, arch


def profile_peak(fn) -> int:
    """Peak live bytes allocated by torch's CPU allocator while ``fn()`` runs (see the docstring)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _padded_batch(vocab: int, seed: int, *, seqs: int = BATCH, prompt: int = PROMPT, completion: int = COMPLETION):
    """Ids and attention of a left-padded batch (row i has i padding tokens), completions unpadded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (seqs, prompt + completion), generator=g)
    attn = torch.ones_like(ids)
    for i in range(seqs):
        attn[i, : min(i, prompt - 1)] = 0
        ids[i, : min(i, prompt - 1)] = 0
    return ids, attn


def case_probe_step(size: str) -> dict:
    """clip_probe.grpo_step with two updates vs plan.estimate_probe's phases (minus the weights)."""
    import torch

    from spurious_rewards.audit import clip_probe

    model, a = tiny_model(size)
    ids, attn = _padded_batch(a.vocab, 1)
    g = torch.Generator().manual_seed(2)
    mask = torch.ones(BATCH, COMPLETION)
    rewards = (torch.rand(BATCH, generator=g) < 0.5).float()
    batch = {"ids": ids, "attention": attn, "mask": mask, "rewards": rewards,
             "adv": clip_probe.group_advantages(rewards, 4), "order": torch.randperm(BATCH, generator=g)}
    updates = 2
    measured = profile_peak(lambda: clip_probe.grpo_step(
        model, batch, epsilon=0.2, updates=updates, lr=1e-3, betas=(0.9, 0.95), max_grad_norm=1.0,
        temperature=1.0))
    seq, chunk, P = PROMPT + COMPLETION, BATCH // updates, a.params
    old = plan.probe_logits(BATCH, seq, COMPLETION, a.vocab, grad=False)
    update = (4 * P + 8 * P + plan.activations(a, chunk, seq, 4, checkpointing=False, padded=True)
              + plan.probe_logits(chunk, seq, COMPLETION, a.vocab, grad=True))
    step = 4 * P + 8 * P + 4 * P
    return {"case": "probe_step", "size": size, "params": P, "measured": measured,
            "estimate": max(old, update, step),
            "terms": {"old log-probs": old, "update": update, "optimizer step": step}}


def case_trl_update(size: str) -> dict:
    """One TRL fused-head micro-batch forward+backward vs gradients + activations + head terms."""
    import torch
    from trl.trainer.utils import add_fused_lm_head

    model, a = tiny_model(size)
    add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, attn = _padded_batch(a.vocab, 3)

    def step() -> None:
        labels = ids.masked_fill(attn == 0, -100)
        labels[:, :-COMPLETION] = -100
        out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True)
        logps = out.log_probs[:, -COMPLETION:]
        (-(logps.mean()) + 0 * out.entropy.mean()).backward()

    step()
    opt.step()  # Adam states exist from the first update on; they are not part of the transient
    opt.zero_grad(set_to_none=True)
    measured = profile_peak(step)
    seq, P = PROMPT + COMPLETION, a.params
    terms = {"gradients": 4 * P,
             "activations": plan.activations(a, BATCH, seq, 4, checkpointing=False, padded=True),
             "fused head (torch fallback)": plan.trl_head_bytes(a, BATCH * (seq - 1), triton=False)}
    return {"case": "trl_update", "size": size, "params": P, "measured": measured,
            "estimate": sum(terms.values()), "terms": terms}


def case_ckpt_bf16(size: str) -> dict:
    """bf16 + gradient checkpointing + fp32 logits (OpenRLHF's actor step shape) vs the openrlhf terms."""
    import torch

    model, a = tiny_model(size, "bfloat16")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name is deprecated
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, a.vocab, (BATCH, PROMPT + COMPLETION), generator=g)

    def step() -> None:
        logits = model(input_ids=ids).logits
        logits = logits.to(torch.float32)
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        (-logp.mean()).backward()

    measured = profile_peak(step)
    seq, P = PROMPT + COMPLETION, a.params
    terms = {"gradients (bf16)": 2 * P,
             "activations (checkpointed)": plan.activations(a, BATCH, seq, 2, checkpointing=True, padded=False),
             "logits (bf16, fp32 copy, log-softmax, grad)": BATCH * seq * a.vocab * plan.OPENRLHF_BYTES_PER_LOGIT}
    return {"case": "ckpt_bf16", "size": size, "params": P, "measured": measured,
            "estimate": sum(terms.values()), "terms": terms}


def case_generate(size: str) -> dict:
    """``generate`` of a left-padded batch vs KV cache + generate buffers."""
    import torch

    model, a = tiny_model(size)
    model.eval()
    ids, attn = _padded_batch(a.vocab, 5, completion=0)
    new = COMPLETION

    def run() -> None:
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=0, max_new_tokens=new,
                           min_new_tokens=new, pad_token_id=0, eos_token_id=2)

    measured = profile_peak(run)
    terms = {"KV cache": plan.kv_cache(a, BATCH, PROMPT + new, 4),
             "generate buffers": plan.generate_buffers(a, BATCH, PROMPT, 4)}
    return {"case": "generate", "size": size, "params": a.params, "measured": measured,
            "estimate": sum(terms.values()), "terms": terms}


CASES = {"probe_step": case_probe_step, "trl_update": case_trl_update, "ckpt_bf16": case_ckpt_bf16,
         "generate": case_generate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["s", "m", "l"], choices=sorted(SIZES))
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "plan_memory.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'case':<12} {'size':<5} {'params':>9} {'estimate MB':>12} {'measured MB':>12} {'ratio':>7}")
    for case in args.cases:
        for size in args.sizes:
            t0 = time.perf_counter()
            r = CASES[case](size)
            r["ratio"] = r["estimate"] / r["measured"]
            r["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(r)
            print(f"{case:<12} {size:<5} {r['params']:>9,} {r['estimate'] / 1e6:>12.2f} {r['measured'] / 1e6:>12.2f} "
                  f"{r['ratio']:>7.2f}", flush=True)
    within = all(abs(r["ratio"] - 1) <= TOLERANCE for r in rows)
    print(f"all within {TOLERANCE:.0%}: {within}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tolerance": TOLERANCE, "batch": [BATCH, PROMPT, COMPLETION], "rows": rows,
                                    "meets_target": within}, indent=1) + "\n")


if __name__ == "__main__":
    main()
