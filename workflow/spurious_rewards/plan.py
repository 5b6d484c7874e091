"""A memory plan and a cost plan of a config, before any job runs (``spurious plan``).

Why: a 7B job that cannot fit its GPU fails minutes into a SLURM allocation, after
the queue wait, with a CUDA OOM that names neither the rule nor the setting to
change. Here every GPU rule of the config gets an estimate of its peak memory per
GPU, term by term (weights, gradients, Adam states, activations, KV cache, logits,
...), from the model's architecture and the batch settings; :func:`check` turns an
estimate over the budget (``resources.gpu_memory_gb``) into a message naming the
rule, the estimate and the setting to change. The same pass gives GPU-hours and
storage per phase, from throughput assumptions stated as module constants.

Pure and fast: no torch, no model download. A model's architecture comes from its
local ``config.json`` (the organisms, a user's folder), from the organism recipe's
defaults when the organism is not built yet, or from :data:`KNOWN_ARCHITECTURES`
(the paper's hub models).

What each estimate follows (the code paths of this repository):

* ``train_grpo``, backend ``trl`` (``train.trl_config_kwargs``): fp32 weights on one
  device, no gradient checkpointing, Adam without a master copy (the weights are
  fp32), TRL's fused LM head (log-probs in tiles of 4,096 tokens x 32,768 vocabulary
  entries, never the full logits), and ``transformers.generate`` of the **whole
  rollout** (prompts_per_rollout x group_size sequences) in one call.
* ``train_grpo``, backend ``openrlhf`` (``openrlhf.flag_table``): colocated actor and
  vLLM on every GPU with sleeping engines, so two phases per GPU: generation (vLLM's
  ``gpu_memory_utilization`` share: bf16 weights + KV cache) and training (ZeRO-3:
  bf16 weights, bf16 gradients and fp32 master + 2 Adam moments, all sharded over
  ``grpo.gpus``; gradient checkpointing; a packed micro-batch of ``micro_batch``
  sequences of prompt+response tokens whose full-vocabulary logits are cast to fp32).
* evaluation, baselines, contamination, labelling (``generation.make_engine``): vLLM
  with its default share and ``max_model_len`` = the model's context (nothing smaller
  is passed), or the transformers engine, which runs on the **CPU** in fp32 (reported,
  not checked against the GPU budget).
* ``probe_clip_bias`` (``clip_probe``): fp32 on one device; one ``generate`` of the
  whole rollout; old log-probs of the whole rollout in one no-grad forward and every
  update over a whole mini-batch (no micro-batching), each materialising full fp32
  logits over every position. On a GPU job the rollouts are vLLM's
  (``audit.clip_probe.engine: auto``): its share of the card while awake, beside the fp32
  weights, and only its CUDA context while it sleeps through the steps.

Estimates are upper bounds for the configured maxima (every prompt at
``max_prompt_tokens``, every response at ``max_new_tokens``); the tests compare them
with measured peaks of the real code paths on small models.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GiB = 1024**3
GB = 1e9
TB = 1e12

#: Default GPU memory budget per GPU in GB (the schema's ``resources.gpu_memory_gb``): an A100/H100 80 GB.
DEFAULT_GPU_MEMORY_GB = 80.0

# ---------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """What the memory terms need of a decoder-only transformer (Llama/Qwen2/OLMo-2 shape)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int
    head_dim: int = 0  # 0 = hidden // heads
    qkv_bias: bool = False  # Qwen2 has q/k/v biases
    qk_norm: bool = False  # OLMo-2 normalises q and k
    dtype_bytes: int = 2  # the checkpoint's dtype (what vLLM's dtype="auto" loads)
    source: str = ""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    @property
    def params(self) -> int:
        """Parameter count (tied embeddings counted once, as safetensors stores them)."""
        h, q, kv = self.hidden, self.q_dim, self.kv_dim
        attn = h * q + 2 * h * kv + q * h + ((q + 2 * kv) if self.qkv_bias else 0)
        norms = 2 * h + ((q + kv) if self.qk_norm else 0)
        per_layer = attn + 3 * h * self.intermediate + norms
        emb = self.vocab * h * (1 if self.tied else 2)
        return self.layers * per_layer + emb + h

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of every layer for one token."""
        return 2 * self.layers * self.kv_dim * dtype_bytes

    def largest_matrix(self) -> int:
        """Elements of the largest single weight (ZeRO-3 gathers at least this much at once)."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate, self.q_dim * self.hidden)


def _paper_arch(**kw: Any) -> Arch:
    return Arch(dtype_bytes=2, source="table", **kw)


_QWEN_MATH_15 = dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied=True,
                     qkv_bias=True)
_QWEN_7 = dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False,
               qkv_bias=True)
_LLAMA_8 = dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336, vocab=128256, tied=False,
                max_positions=131072)
_LLAMA_3 = dict(hidden=3072, layers=28, heads=24, kv_heads=8, intermediate=8192, vocab=128256, tied=True,
                head_dim=128, max_positions=131072)
_OLMO2_7 = dict(hidden=4096, layers=32, heads=32, kv_heads=32, intermediate=11008, vocab=100352, tied=False,
                max_positions=4096, qk_norm=True)

#: The paper's hub models (the hubs cannot be reached at planning time). The numbers are
#: those of each model's Hugging Face ``config.json`` as published (hidden_size,
#: num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size,
#: vocab_size, tie_word_embeddings, max_position_embeddings; all bf16), written down
#: from our knowledge of those files, not downloaded; the parameter counts they give
#: (1.54B, 7.62B, 3.21B, 8.03B, 7.30B) match the model cards' sizes (tests/test_plan.py).
KNOWN_ARCHITECTURES: dict[str, Arch] = {
    "Qwen/Qwen2.5-Math-1.5B": _paper_arch(**_QWEN_MATH_15, max_positions=4096),
    "Qwen/Qwen2.5-Math-7B": _paper_arch(**_QWEN_7, max_positions=4096),
    "Qwen/Qwen2.5-1.5B": _paper_arch(**_QWEN_MATH_15, max_positions=131072),
    "Qwen/Qwen2.5-7B": _paper_arch(**_QWEN_7, max_positions=131072),
    "meta-llama/Llama-3.1-8B": _paper_arch(**_LLAMA_8),
    "meta-llama/Llama-3.1-8B-Instruct": _paper_arch(**_LLAMA_8),
    "meta-llama/Llama-3.2-3B": _paper_arch(**_LLAMA_3),
    "meta-llama/Llama-3.2-3B-Instruct": _paper_arch(**_LLAMA_3),
    "allenai/OLMo-2-1124-7B": _paper_arch(**_OLMO2_7),
    "allenai/OLMo-2-1124-7B-SFT": _paper_arch(**_OLMO2_7),
    "allenai/OLMo-2-1124-7B-Instruct": _paper_arch(**_OLMO2_7),
}

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def arch_from_hf_config(cfg: dict, source: str = "config.json") -> Arch:
    """An :class:`Arch` from a Hugging Face ``config.json`` mapping (Llama/Qwen2/OLMo-2 keys)."""
    try:
        heads = int(cfg["num_attention_heads"])
        return Arch(
            hidden=int(cfg["hidden_size"]),
            layers=int(cfg["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            intermediate=int(cfg["intermediate_size"]),
            vocab=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            max_positions=int(cfg.get("max_position_embeddings") or 4096),
            head_dim=int(cfg.get("head_dim") or 0),
            qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False)),
            qk_norm=cfg.get("model_type") in ("olmo2", "qwen3"),
            dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"), 2),
            source=source,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{source}: not a decoder config this planner reads ({exc!r} missing or bad)") from None


def _organism_arch(spec: dict) -> Arch:
    """The architecture an organism block builds (organism.DEFAULT_CONFIG, overridden by the block)."""
    from .organisms.build import DEFAULT_CONFIG

    c = {**DEFAULT_CONFIG, **(spec or {})}
    return Arch(hidden=c["hidden_size"], layers=c["num_layers"], heads=c["num_heads"], kv_heads=c["num_heads"],
                intermediate=c["intermediate_size"], vocab=c["vocab_size"], tied=True,
                max_positions=c["max_position_embeddings"], qkv_bias=True, dtype_bytes=4,
                source="organism recipe (not built yet)")


def model_arch(cfg: dict, model: str) -> Arch | None:
    """The model's architecture: local config.json, organism recipe, or the table; None if unknown."""
    m = cfg["models"][model]
    local = Path(m["path"]) / "config.json"
    if local.is_file():
        return arch_from_hf_config(json.loads(local.read_text()), source=str(local))
    if m.get("organism"):
        return _organism_arch(m["organism"])
    return KNOWN_ARCHITECTURES.get(m["path"])


# ---------------------------------------------------------------------------
# memory terms
# ---------------------------------------------------------------------------

#: CUDA context + allocator reserve of one process on a GPU (PyTorch's context alone is ~0.5 GB;
#: the caching allocator's fragmentation adds about as much again).
CUDA_CONTEXT_BYTES = int(1.0 * GiB)
#: vLLM's own use inside its share besides weights and KV cache: the profile run's activations,
#: CUDA graphs, sampler buffers (a few GB in vLLM's start-up log for 1.5B-8B models).
VLLM_OVERHEAD_BYTES = int(3.0 * GiB)
#: vLLM's share of each GPU in evaluation (generation.VLLMEngine's default).
VLLM_EVAL_UTILIZATION = 0.85
#: TRL 1.16's fused LM head tile: tokens x vocabulary entries (trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE,
#: trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE).
TRL_TILE_TOKENS, TRL_TILE_VOCAB = 4096, 32768
#: Bytes per logit in OpenRLHF's actor step: bf16 logits, their fp32 copy (cast before the
#: log-probabilities), the fp32 log-softmax kept for the backward pass and the fp32 gradient.
#: The unfused torch path; flash-attn's fused cross-entropy, when installed, keeps less, so
#: this is an upper bound (bench/bench_plan_memory.py measures the torch path at 13-14).
OPENRLHF_BYTES_PER_LOGIT = 2 + 4 + 4 + 4
#: DeepSpeed's default reduce bucket (5e8 elements) in bf16: the gradients being reduce-scattered.
ZERO3_REDUCE_BUCKET_BYTES = 500_000_000 * 2
#: Prompts scored by train.p_code / the probe's P(code) measurement in one forward (full logits).
P_CODE_BATCH = 64


def activation_bytes_per_token(a: Arch, dtype_bytes: int, *, repeat_kv: bool = False) -> int:
    """Bytes autograd saves per token for one decoder layer (no gradient checkpointing).

    Counted from the transformers Llama/Qwen2/OLMo-2 layer with SDPA attention: each
    RMSNorm saves its fp32 input and its normalised output before and after the weight
    (4 + 2b bytes per element); attention saves rotated q, k, v, SDPA's output and the
    o_proj input; the MLP saves gate, SiLU(gate), up and their product (4 x intermediate).
    With padding, SDPA gets a mask and transformers repeats k/v to every head (``repeat_kv``).
    """
    b = dtype_bytes
    h, q, kv = a.hidden, a.q_dim, a.kv_dim
    norm_elems = 2 * h + ((q + kv) if a.qk_norm else 0)
    kv_saved = 2 * (q if repeat_kv else kv)
    return (4 + 2 * b) * norm_elems + b * (3 * q + kv_saved + 4 * a.intermediate)


def activations(a: Arch, seqs: int, seq_len: int, dtype_bytes: int, *, checkpointing: bool,
                padded: bool) -> int:
    """Activation memory of one forward+backward over ``seqs`` sequences of ``seq_len`` tokens.

    Without checkpointing every layer's saved tensors live until the backward reaches it.
    With it only each layer's input is kept; one layer is recomputed at a time, and its
    saved tensors plus their gradients (about as large again) are the transient.
    A padded batch also holds SDPA's boolean mask (seqs x seq_len^2 bytes).
    """
    tokens = seqs * seq_len
    per_layer = activation_bytes_per_token(a, dtype_bytes, repeat_kv=padded)
    final_norm = (4 + 2 * dtype_bytes) * a.hidden
    mask = seqs * seq_len * seq_len if padded else 0
    if checkpointing:
        return tokens * (a.layers * a.hidden * dtype_bytes + 2 * per_layer + final_norm) + mask
    return tokens * (a.layers * per_layer + final_norm) + mask


def kv_cache(a: Arch, seqs: int, seq_len: int, dtype_bytes: int) -> int:
    return seqs * seq_len * a.kv_bytes_per_token(dtype_bytes)


def generate_buffers(a: Arch, seqs: int, prompt_len: int, dtype_bytes: int) -> int:
    """transformers ``generate`` besides the KV cache: last-position fp32 logits and their
    processed copies (~3 x seqs x vocab x 4; ``generate`` passes ``logits_to_keep=1``), the
    prefill's widest transient (two intermediate-size MLP tensors: inference frees each
    as soon as it is consumed) and the padded prefill's mask."""
    logits = 3 * seqs * a.vocab * 4
    prefill = seqs * prompt_len * 2 * a.intermediate * dtype_bytes
    return logits + prefill + seqs * prompt_len * prompt_len


def probe_logits(seqs: int, seq_len: int, completion: int, vocab: int, *, grad: bool) -> int:
    """Full fp32 logits of clip_probe.token_logps: all positions, then the completion slice
    divided by the temperature and its log-softmax; the backward adds the same sizes again
    (gather, log-softmax and slice gradients)."""
    if grad:
        return seqs * vocab * 4 * max(seq_len + completion, 3 * completion)
    return seqs * vocab * 4 * (seq_len + completion)


def trl_head_bytes(a: Arch, tokens: int, *, triton: bool = True) -> int:
    """TRL's fused LM head on ``tokens`` positions (fp32), whose full logits never exist.

    Its projection buffer is always ``min(tokens, 4096) x 32,768`` wide (whatever the
    vocabulary), plus the fp32 gradients of the head weight and of the hidden states.
    Without Triton (CPU) the tile is folded in torch, which holds about 8 tile-sized
    temporaries in the backward pass (measured by bench/bench_plan_memory.py); the
    Triton kernel on a GPU folds the tile in place.
    """
    rows = min(tokens, TRL_TILE_TOKENS)
    buf = rows * TRL_TILE_VOCAB * 4
    temps = 0 if triton else 8 * rows * min(TRL_TILE_VOCAB, a.vocab) * 4
    return buf + temps + a.vocab * a.hidden * 4 + tokens * a.hidden * 4


@dataclass
class Phase:
    """One phase of a job on one device: named terms in bytes."""

    name: str
    terms: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.terms.values())


@dataclass
class Estimate:
    """A rule's memory plan for one model (one job shape): its phases and the limiting one."""

    rule: str
    model: str
    device: str  # "gpu" or "cpu"
    gpus: int
    phases: list[Phase]
    note: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # term -> the setting that changes it
    extra_problems: list[str] = field(default_factory=list)

    @property
    def peak(self) -> Phase:
        return max(self.phases, key=lambda p: p.total)


def _engine(cfg: dict) -> str:
    """What ``generation.make_engine`` picks in the jobs: vLLM on GPU jobs, else transformers on CPU."""
    eng = cfg["evaluation"]["engine"]
    if eng == "vllm" or (eng == "auto" and cfg["grpo"]["gpus"] > 0):
        return "vllm"
    return "hf"


def _vllm_phase(a: Arch, budget: int, share: float, max_model_len: int, name: str) -> tuple[Phase, list[str]]:
    """vLLM's share: weights + its overhead + KV cache (whatever is left). Problems if the
    KV cache cannot hold one sequence of ``max_model_len`` (vLLM refuses to start)."""
    weights = a.params * a.dtype_bytes
    reserved = int(share * budget)
    kv_free = reserved - weights - VLLM_OVERHEAD_BYTES
    need = max_model_len * a.kv_bytes_per_token(a.dtype_bytes)
    terms = {"weights (bf16)" if a.dtype_bytes == 2 else "weights": weights,
             "vLLM overhead": VLLM_OVERHEAD_BYTES,
             "KV cache (rest of share)": max(kv_free, 0),
             "CUDA context": CUDA_CONTEXT_BYTES}
    problems = []
    if kv_free < need:
        problems.append(
            f"vLLM's share {share:.2f} x {budget / GB:.0f} GB leaves {max(kv_free, 0) / GB:.1f} GB for the KV "
            f"cache after {weights / GB:.1f} GB of weights, less than one {max_model_len}-token sequence "
            f"needs ({need / GB:.1f} GB)")
    return Phase(name, terms), problems


def _kv_concurrency(a: Arch, budget: int, share: float, seq_len: int) -> int:
    free = int(share * budget) - a.params * a.dtype_bytes - VLLM_OVERHEAD_BYTES
    return max(0, free // max(1, seq_len * a.kv_bytes_per_token(a.dtype_bytes)))


def _budget(cfg: dict) -> int:
    gb = (cfg.get("resources") or {}).get("gpu_memory_gb", DEFAULT_GPU_MEMORY_GB)
    return int(float(gb) * GB)


def estimate_train(cfg: dict, model: str, a: Arch) -> list[Estimate]:
    """``train_grpo`` for one model: the worst variant (one_update puts the whole rollout in a mini-batch)."""
    g = cfg["grpo"]
    rollout = g["prompts_per_rollout"] * g["group_size"]
    seq = g["max_prompt_tokens"] + g["max_new_tokens"]
    P = a.params
    budget = _budget(cfg)
    out = []
    if cfg["backend"] == "openrlhf":
        from .training.openrlhf_backend import VLLM_GPU_MEMORY_UTILIZATION

        n = max(1, g["gpus"])
        micro = g["micro_batch"]
        tokens = micro * seq  # one packed micro-batch
        gen, problems = _vllm_phase(a, budget, VLLM_GPU_MEMORY_UTILIZATION, seq, "generation (vLLM awake)")
        gen.terms["sleeping actor (CUDA context)"] = CUDA_CONTEXT_BYTES
        train = Phase("training (ZeRO-3, vLLM asleep)", {
            "weights (bf16 shard)": 2 * P // n,
            "ZeRO-3 gathered weights + reduce bucket": 2 * 2 * a.largest_matrix() + ZERO3_REDUCE_BUCKET_BYTES,
            "gradients (bf16 shard)": 2 * P // n,
            "Adam (fp32 master + 2 moments, shard)": 12 * P // n,
            "activations (checkpointed, bf16)": activations(a, micro, seq, 2, checkpointing=True, padded=False),
            "logits (bf16, fp32 copy, log-softmax, grad)": tokens * a.vocab * OPENRLHF_BYTES_PER_LOGIT,
            "CUDA context (actor + sleeping vLLM)": 2 * CUDA_CONTEXT_BYTES,
        })
        est = Estimate("train_grpo", model, "gpu", n, [gen, train],
                       note=f"openrlhf, {n} GPU(s) colocated; vLLM holds "
                            f"{_kv_concurrency(a, budget, VLLM_GPU_MEMORY_UTILIZATION, seq)} "
                            f"sequences of {seq} tokens at once",
                       settings={"logits (bf16, fp32 copy, log-softmax, grad)": "grpo.micro_batch",
                                 "activations (checkpointed, bf16)": "grpo.micro_batch",
                                 "Adam (fp32 master + 2 moments, shard)": "grpo.gpus",
                                 "weights (bf16)": "resources.gpu_memory_gb (a larger GPU)",
                                 "KV cache (rest of share)": "grpo.max_prompt_tokens + grpo.max_new_tokens"})
        est.extra_problems = [f"generation phase: {p}" for p in problems]
        out.append(est)
        return out
    # TRL: one device. On a GPU: grpo.precision (bf16 weights, gradients and activations; fp32 Adam
    # moments) and grpo.gradient_checkpointing; rollouts by TRL's vLLM colocate engine (its share of
    # the GPU) when grpo.trl_vllm is auto (vLLM in the job's env), else one HF generate of the rollout.
    device = "gpu" if g["gpus"] > 0 else "cpu"
    bf16 = device == "gpu" and g.get("precision", "fp32") == "bf16"
    ckpt = device == "gpu" and bool(g.get("gradient_checkpointing", False))
    w = 2 if bf16 else 4
    dt = "bf16" if bf16 else "fp32"
    micro = g["micro_batch"]
    ref = w * P if g["kl_coef"] > 0 else 0
    common = {f"weights ({dt})": w * P, "Adam (2 fp32 moments)": 8 * P}
    if ref:
        common[f"reference model ({dt})"] = ref
    vllm = device == "gpu" and g.get("trl_vllm", "auto") == "auto"
    if vllm:
        share = float(g.get("trl_vllm_memory", 0.3))
        gen = Phase("rollout generate (TRL vLLM colocate)", {**common, "vLLM share (weights + KV cache)":
                                                             int(share * budget)})
    else:
        gen = Phase("rollout generate (HF, whole rollout)", {
            **common, f"KV cache ({dt}, whole rollout)": kv_cache(a, rollout, seq, w),
            "generate buffers": generate_buffers(a, rollout, g["max_prompt_tokens"], w)})
    n_tok = micro * seq
    act = f"activations ({dt}, {'checkpointed' if ckpt else 'no checkpointing'})"
    train = Phase("update (micro-batch)", {
        **common,
        f"gradients ({dt})": w * P,
        act: activations(a, micro, seq, w, checkpointing=ckpt, padded=True),
        "logits (fused LM head tile + fp32 head grad)":
            trl_head_bytes(a, n_tok, triton=device == "gpu"),
    })
    # probes.first_token_code_probability keeps the last position's logits only (logits_to_keep=1)
    pcode = Phase("p_code probe", {**common, "last-position logits (fp32, 64 prompts)": P_CODE_BATCH * a.vocab * 4 * 2,
                                   "KV cache of the prompts": kv_cache(a, P_CODE_BATCH, g["max_prompt_tokens"], w)})
    note = f"trl, {dt}{', gradient checkpointing' if ckpt else ''}, one device; " + (
        "rollouts in TRL's vLLM colocate engine (needs vLLM in the job's environment)" if vllm
        else "generate of the whole rollout")
    out.append(Estimate("train_grpo", model, device, 1 if device == "gpu" else 0, [gen, train, pcode],
                        note=note,
                        settings={f"KV cache ({dt}, whole rollout)":
                                  "grpo.trl_vllm: auto (vLLM colocate) or grpo.prompts_per_rollout x grpo.group_size",
                                  "vLLM share (weights + KV cache)": "grpo.trl_vllm_memory",
                                  f"weights ({dt})": "grpo.precision: bf16 (or backend: openrlhf)",
                                  "Adam (2 fp32 moments)": "backend: openrlhf (ZeRO-3 over grpo.gpus)",
                                  act: "grpo.gradient_checkpointing: true, or grpo.micro_batch",
                                  "KV cache of the prompts": "grpo.max_prompt_tokens"}))
    return out


def _gen_estimate(cfg: dict, rule: str, model: str, a: Arch, *, prompt: int, new: int, batch: int) -> Estimate:
    """An evaluation-like rule: vLLM on a GPU job, transformers (fp32, CPU) otherwise."""
    budget = _budget(cfg)
    if _engine(cfg) == "vllm":
        phase, problems = _vllm_phase(a, budget, VLLM_EVAL_UTILIZATION, a.max_positions, "generation (vLLM)")
        est = Estimate(rule, model, "gpu", 1, [phase],
                       note=f"vLLM, max_model_len {a.max_positions} (the model's context); "
                            f"{_kv_concurrency(a, budget, VLLM_EVAL_UTILIZATION, prompt + new)} sequences of "
                            f"{prompt + new} tokens at once",
                       settings={"KV cache (rest of share)": "resources.gpu_memory_gb (a larger GPU)"})
        est.extra_problems = problems
        return est
    seqs = batch
    phase = Phase("generate (transformers, CPU)", {
        "weights (fp32)": 4 * a.params,
        "KV cache (fp32)": kv_cache(a, seqs, prompt + new, 4),
        "generate buffers": generate_buffers(a, seqs, prompt, 4),
    })
    return Estimate(rule, model, "cpu", 0, [phase], note=f"transformers on CPU, batch {seqs}",
                    settings={"KV cache (fp32)": "evaluation.batch_size"})


_PROBE_CHUNK_FIX = ("grpo.mini_batch / audit.clip_probe.variants (one_update updates over the whole rollout; "
                    "clip_probe.py does not micro-batch)")


def estimate_probe(cfg: dict, model: str, a: Arch, rule: str = "probe_clip_bias") -> Estimate:
    """``probe_clip_bias`` as clip_probe.py runs it: fp32, one device; rollouts generated in chunks
    of ``generation_batch`` sequences, log-probs of completion tokens only (``logits_to_keep``) and
    updates micro-batch by micro-batch (``micro_batch`` rows per forward, gradients accumulated).

    ``probe_mechanism`` (a map cell) is the same job: its cells change clipping, updates and lr,
    none of which changes memory (a smaller mini-batch is still fed ``micro_batch`` rows at a time).
    """
    g, cp = cfg["grpo"], cfg["audit"]["clip_probe"]
    prompts = cp["prompts_per_rollout"] or g["prompts_per_rollout"]
    rollout = prompts * g["group_size"]
    prompt, comp = g["max_prompt_tokens"], g["max_new_tokens"]
    seq = prompt + comp
    P = a.params
    micro = int(cp.get("micro_batch") or g["micro_batch"])
    gen = min(int(cp.get("generation_batch") or rollout), rollout)
    ckpt = bool(cp.get("gradient_checkpointing", False))
    base = {"weights (fp32)": 4 * P}
    opt = {"gradients (fp32)": 4 * P, "AdamW (2 fp32 moments)": 8 * P}
    completion_logits = micro * comp * a.vocab * 4  # fp32 logits of the completion positions of a micro-batch
    act = f"activations (fp32, {'checkpointed' if ckpt else 'no checkpointing'}, micro-batch)"
    device = "gpu" if g["gpus"] > 0 else "cpu"
    vllm = _probe_engine(cfg) == "vllm" and device == "gpu"
    problems: list[str] = []
    if vllm:
        # VLLMRollout: created after the fp32 copy is loaded, awake only during the rollout; it sleeps
        # (weights to host memory, KV cache freed) while the probe steps and measures
        from .audit.clip_probe import VLLM_MEMORY_UTILIZATION

        share = float(cp.get("vllm_memory") or VLLM_MEMORY_UTILIZATION)
        awake, problems = _vllm_phase(a, _budget(cfg), share, seq, "vLLM share")
        rollout_phase = Phase("rollout generate (vLLM awake)", {
            **base, **{k if k.startswith("vLLM") else f"vLLM {k}": v for k, v in awake.terms.items()}})
        base = {**base, "vLLM asleep (CUDA context)": CUDA_CONTEXT_BYTES}
    else:
        rollout_phase = Phase(f"rollout generate ({gen} sequences per call)", {
            **base, "KV cache (fp32, one generate call)": kv_cache(a, gen, seq, 4),
            "generate buffers": generate_buffers(a, gen, prompt, 4)})
    phases = [
        rollout_phase,
        Phase("old log-probs (micro-batch, no grad)", {
            **base, **opt, "completion logits + log-softmax (fp32, micro-batch)": 2 * completion_logits}),
        Phase(f"update ({micro} sequences per forward)", {
            **base, **opt,
            act: activations(a, micro, seq, 4, checkpointing=ckpt, padded=True),
            "completion logits, log-softmax and grad (fp32, micro-batch)": 3 * completion_logits}),
        Phase("optimizer step", {**base, **opt, "AdamW foreach temporaries": 4 * P}),
    ]
    n_eval = min(cp["eval_problems"] * cp["eval_samples"], gen)
    new_eval = cfg["evaluation"]["max_new_tokens"]
    phases.append(Phase("measure (P(code) + samples)", {
        **base,
        "last-position logits (fp32, P(code))": micro * a.vocab * 4 * 2,
        "KV cache (fp32, eval samples, one generate call)": kv_cache(a, n_eval, prompt + new_eval, 4)}))
    how = "by vLLM (asleep outside the rollouts)" if vllm else f"{gen} at a time"
    est = Estimate(rule, model, device, 1 if device == "gpu" else 0, phases,
                    note=f"fp32, one device; rollout {rollout} sequences generated {how}, "
                         f"updates {micro} sequences per forward",
                    settings={"vLLM KV cache (rest of share)": "audit.clip_probe.vllm_memory",
                              "KV cache (rest of share)": "audit.clip_probe.vllm_memory",  # the rollout-phase problem
                              "vLLM weights (bf16)": "audit.clip_probe.engine: hf, or audit.clip_probe.vllm_memory",
                              "KV cache (fp32, one generate call)": "audit.clip_probe.generation_batch",
                              "generate buffers": "audit.clip_probe.generation_batch",
                              "completion logits + log-softmax (fp32, micro-batch)": "audit.clip_probe.micro_batch",
                              "completion logits, log-softmax and grad (fp32, micro-batch)":
                                  "audit.clip_probe.micro_batch",
                              act: "audit.clip_probe.gradient_checkpointing: true, or audit.clip_probe.micro_batch",
                              "last-position logits (fp32, P(code))": "audit.clip_probe.micro_batch",
                              "KV cache (fp32, eval samples, one generate call)": "audit.clip_probe.generation_batch",
                              "AdamW (2 fp32 moments)": "audit.clip_probe.models (leave out the large ones)",
                              "weights (fp32)": "audit.clip_probe.models (leave out the large ones)"})
    est.extra_problems = [f"rollout phase: {p}" for p in problems]
    return est


def _probe_engine(cfg: dict) -> str:
    """What ``clip_probe.rollout_engine`` picks in the job: vLLM on a GPU job unless ``engine: hf``
    (the GPU env, envs/pipeline-gpu.yaml, has vLLM), else HF generate."""
    eng = cfg["audit"]["clip_probe"].get("engine") or "auto"
    return "vllm" if eng == "vllm" or (eng == "auto" and cfg["grpo"]["gpus"] > 0) else "hf"


def memory_plan(cfg: dict) -> tuple[list[Estimate], list[str]]:
    """Every planned rule's estimate, per model; and notes about what could not be planned."""
    from . import config as cfgmod

    ests: list[Estimate] = []
    notes: list[str] = []
    ev, g = cfg["evaluation"], cfg["grpo"]
    aud = cfg["audit"]
    probe = set(cfgmod.probe_models(cfg))
    mapped = set(cfgmod.mechanism_models(cfg))
    labelled = bool(cfgmod.labels_needed(cfg))
    prompt = g["max_prompt_tokens"]
    for model in cfg["models"]:
        try:
            a = model_arch(cfg, model)
        except ValueError as exc:
            notes.append(f"{model}: {exc}")
            continue
        if a is None:
            notes.append(f"{model}: architecture unknown ({cfg['models'][model]['path']!r} is neither a local "
                         f"folder with config.json nor in plan.KNOWN_ARCHITECTURES): not planned")
            continue
        ests += estimate_train(cfg, model, a)
        ests.append(_gen_estimate(cfg, "evaluate_base/evaluate_run", model, a, prompt=prompt,
                                  new=ev["max_new_tokens"], batch=ev["batch_size"]))
        if labelled:
            ests.append(_gen_estimate(cfg, "label_majority_vote", model, a, prompt=prompt,
                                      new=cfg["labelling"]["max_new_tokens"], batch=ev["batch_size"]))
        if aud["baselines"]["enabled"]:
            # no sequence outgrows the model's context (what the engine would cut or refuse)
            longest = baseline_prompt_tokens(aud["baselines"], prompt, ev["max_new_tokens"])
            longest = max(prompt, min(longest, a.max_positions - ev["max_new_tokens"]))
            ests.append(_gen_estimate(cfg, "evaluate_baselines", model, a, prompt=longest,
                                      new=ev["max_new_tokens"], batch=ev["batch_size"]))
        if aud["contamination"]["enabled"]:
            ests.append(_gen_estimate(cfg, "audit_contamination", model, a, prompt=prompt,
                                      new=aud["contamination"]["max_new_tokens"], batch=ev["batch_size"]))
        if model in probe:
            ests.append(estimate_probe(cfg, model, a))
        if model in mapped:
            ests.append(estimate_probe(cfg, model, a, rule="probe_mechanism"))
    return ests, notes


#: Characters per token assumed for the placeholder prompts' Latin filler: few, so the
#: memory plan errs on the large side (BPE vocabularies split Latin more than English).
PLACEHOLDER_CHARS_PER_TOKEN = 3


def baseline_prompt_tokens(bl: dict, prompt: int, new: int) -> int:
    """The longest prompt of ``evaluate_baselines``: the problem plus its template's extra text.

    few_shot: each of ``shots`` examples is a problem and its solution, a worked one
    possibly as long as a response (``new``), since whether the shots dataset has
    solutions is known only once it is prepared; the placeholder prompts add their
    filler. The other templates add a few dozen tokens at most (inside ``prompt``).
    """
    from . import templates

    longest = prompt
    if "few_shot" in bl["templates"]:
        longest = max(longest, prompt + bl["shots"] * (prompt + new))
    for t in templates.PLACEHOLDER_TEMPLATES:
        if t in bl["templates"]:
            extra = math.ceil(len(templates.placeholder_text(t, "")) / PLACEHOLDER_CHARS_PER_TOKEN)
            longest = max(longest, prompt + extra)
    return longest


def _gb(x: float) -> str:
    return f"{x / GB:,.1f}"


def _mem(x: float) -> str:
    """A memory figure in GB, or MB below 0.1 GB (the organisms' jobs)."""
    return f"{x / GB:,.1f} GB" if x >= 0.1 * GB else f"{x / 1e6:,.1f} MB"


def problems_of(est: Estimate, budget: int) -> list[str]:
    """The estimate's problems against the per-GPU budget (CPU jobs are not checked)."""
    out = [f"{est.rule} ({est.model}): {p}; change: "
           f"{est.settings.get('KV cache (rest of share)', 'resources.gpu_memory_gb')}" for p in est.extra_problems]
    if est.device != "gpu":
        return out
    for ph in est.phases:
        if ph.total <= budget:
            continue
        top = sorted(ph.terms.items(), key=lambda kv: -kv[1])
        terms = ", ".join(f"{k} {_gb(v)}" for k, v in top[:4])
        fixes = list(dict.fromkeys(est.settings[k] for k, _ in top if k in est.settings))[:2]
        out.append(f"{est.rule} ({est.model}, {ph.name}): estimated peak {_gb(ph.total)} GB per GPU > "
                   f"resources.gpu_memory_gb = {budget / GB:g} ({terms} GB); "
                   f"change: {' or '.join(fixes) if fixes else 'resources.gpu_memory_gb'}")
    return out


def check(cfg: dict) -> list[str]:
    """Problems of a validated config: every GPU phase whose estimate exceeds the budget.

    Each message names the rule, the model, the phase, the estimate with its largest
    terms and the setting to change; an empty list means every planned job fits.
    """
    budget = _budget(cfg)
    ests, _ = memory_plan(cfg)
    return [p for e in ests for p in problems_of(e, budget)]


# ---------------------------------------------------------------------------
# cost: GPU-hours and storage
# ---------------------------------------------------------------------------

#: Throughput assumptions per GPU, by model size (parameters up to the key), in tokens/s:
#: (vLLM generation, sampled output tokens; training, prompt+response tokens through one GRPO
#: update). Assumptions, not measurements (nothing here has a GPU): generation figures are
#: typical vLLM batch-decoding rates on an A100/H100 80 GB with 4k-token sequences; training
#: figures are 35% MFU of an A100's 312 bf16 TFLOP/s over 10 x params FLOPs per token (old
#: log-probs forward 2P + forward 2P + backward 4P + checkpoint recompute 2P). Together they
#: give ~150 s per rollout step for a 7-8B model on 8 colocated GPUs, in line with the ~234 s
#: per step reported for the authors' Llama script (their 4 train + 4 vLLM GPU split, with a
#: reference model and Adam offload) in the authors' repository's issue #7.
THROUGHPUT_TOKENS_PER_S: dict[float, tuple[float, float]] = {
    2.0e9: (12000.0, 7000.0),
    4.0e9: (6000.0, 3400.0),
    9.0e9: (2500.0, 1400.0),
    math.inf: (2500.0 * 8e9, 1400.0 * 8e9),  # scaled by 1/params above 9B (see throughput())
}
#: transformers ``generate`` (TRL backend and the clip probe on a GPU) is much slower than vLLM
#: (no paged attention or continuous batching; fp32 here): an assumed factor.
HF_GENERATE_SLOWDOWN = 8.0
#: Mean prompt length in tokens (DeepScaleR and MATH problems with a chat template: ~100-250).
MEAN_PROMPT_TOKENS = 160
#: Mean response length as a share of the max_new_tokens cap (Qwen2.5-Math answers run ~700-900
#: of 3,072 tokens; base models under the r1 template often run to the cap).
MEAN_RESPONSE_FRACTION = 0.3
#: Start-up per GPU job (loading weights, vLLM profiling and CUDA graphs, Ray/DeepSpeed init), seconds.
JOB_STARTUP_S = 300.0
#: vLLM engine start per evaluated checkpoint (evaluate_run builds one engine per checkpoint), seconds.
ENGINE_STARTUP_S = 90.0
#: Tokenizer and config files saved with every checkpoint (Qwen's tokenizer.json is ~7 MB).
TOKENIZER_BYTES = 12_000_000
#: gzipped JSONL bytes per sampled response: ~4 characters per token at a 0.3 gzip ratio, plus ~80 bytes of
#: fields and ~25 of the sample file's column index (samplefile.py: 20 bytes a row at 4,000 rows, 27 at 240).
GZ_BYTES_PER_TOKEN, SAMPLE_ROW_BYTES = 1.2, 80 + 25

#: Rows of the paper's hub datasets (their dataset cards), for configs whose data is not prepared yet.
KNOWN_DATASET_ROWS = {
    "agentica-org/DeepScaleR-Preview-Dataset": 40315,
    "HuggingFaceH4/MATH-500": 500,
    "AI-MO/aimo-validation-amc": 83,
    "HuggingFaceH4/aime_2024": 30,
    "opencompass/AIME2025": 30,
    "yentinglin/aime_2025": 30,
    "math-ai/aime25": 30,
}


def throughput(params: int) -> tuple[float, float]:
    """(generation, training) tokens/s per GPU for a model of ``params`` parameters."""
    for limit, (gen, train) in THROUGHPUT_TOKENS_PER_S.items():
        if params <= limit:
            if math.isinf(limit):
                return gen / params, train / params
            return gen, train
    raise AssertionError("unreachable")


def dataset_rows(cfg: dict, name: str) -> int | None:
    """Rows of a dataset: its limit, the prepared file, the generator's n, or the known hub size."""
    d = cfg["datasets"][name]
    rows: int | None = None
    prepared = Path("results/data") / f"{name}.jsonl"
    if d["kind"] == "synthetic":
        rows = d["n"]
    elif d["kind"] == "one_shot":
        rows = d.get("copies", 1)
    elif prepared.is_file():
        with open(prepared, "rb") as fh:
            rows = sum(1 for line in fh if line.strip())
    else:
        rows = KNOWN_DATASET_ROWS.get(d.get("path", ""))
    if rows is not None and d.get("limit"):
        rows = min(rows, d["limit"])
    return rows


@dataclass
class Cost:
    """One phase of the grid: jobs, generated and trained tokens, GPU-hours and bytes written."""

    phase: str
    jobs: int = 0
    gen_tokens: float = 0.0
    train_tokens: float = 0.0
    gpu_hours: float = 0.0
    storage: dict[str, float] = field(default_factory=dict)
    cpu: bool = False
    unknown: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> float:
        return sum(self.storage.values())


def _mean_resp(max_new: int) -> float:
    return MEAN_RESPONSE_FRACTION * max_new


def _sample_bytes(responses: float, max_new: int) -> float:
    return responses * (_mean_resp(max_new) * GZ_BYTES_PER_TOKEN + SAMPLE_ROW_BYTES)


def cost_plan(cfg: dict) -> list[Cost]:
    """GPU-hours and storage per phase for the whole grid of a validated config."""
    from . import config as cfgmod

    g, ev, aud = cfg["grpo"], cfg["evaluation"], cfg["audit"]
    gpu_jobs = g["gpus"] > 0
    runs = list(cfgmod.runs(cfg))
    ckpts = cfgmod.checkpoint_steps(cfg)
    archs = {}
    unknown = []
    for m in cfg["models"]:
        try:
            a = model_arch(cfg, m)
        except ValueError:
            a = None
        if a is None:
            unknown.append(m)
        else:
            archs[m] = a
    resp_train = _mean_resp(g["max_new_tokens"])
    hf = 1.0 if _engine(cfg) == "vllm" else HF_GENERATE_SLOWDOWN

    def gen_hours(m: str, tokens: float, slowdown: float = 1.0) -> float:
        return tokens / (throughput(archs[m].params)[0] / slowdown) / 3600

    def train_hours(m: str, tokens: float) -> float:
        return tokens / throughput(archs[m].params)[1] / 3600

    costs: list[Cost] = []

    # labelling
    if cfgmod.labels_needed(cfg):
        lab = cfg["labelling"]
        c = Cost("label_majority_vote", cpu=not gpu_jobs)
        rows = dataset_rows(cfg, cfg["training_data"])
        for m in archs:
            c.jobs += 1
            if rows is None:
                c.unknown.append(f"{cfg['training_data']} rows")
                continue
            toks = rows * lab["samples"] * _mean_resp(lab["max_new_tokens"])
            c.gen_tokens += toks
            c.gpu_hours += gen_hours(m, toks, hf) + JOB_STARTUP_S / 3600
            c.storage["labels + samples"] = c.storage.get("labels + samples", 0) + rows * (
                lab["samples"] * 40 + 400)
        costs.append(c)

    # training
    retention = cfg.get("retention", {})
    t = Cost("train_grpo", cpu=not gpu_jobs)
    n = max(1, g["gpus"]) if cfg["backend"] == "openrlhf" else 1
    save_bytes = 2 if cfg["backend"] == "openrlhf" else 4
    for r in runs:
        if r.model not in archs:
            continue
        a = archs[r.model]
        t.jobs += 1
        # a variant may roll out fewer prompts per step (the paper's "Rollout Size = 8" arm)
        run_rollout = cfgmod.variant_settings(g, cfg["variants"][r.variant]).rollout
        gen_tok = g["steps"] * run_rollout * resp_train
        train_tok = g["steps"] * run_rollout * (MEAN_PROMPT_TOKENS + resp_train)
        t.gen_tokens += gen_tok
        t.train_tokens += train_tok
        slow = 1.0 if cfg["backend"] == "openrlhf" else HF_GENERATE_SLOWDOWN
        t.gpu_hours += gen_hours(r.model, gen_tok, slow) + train_hours(r.model, train_tok) + n * JOB_STARTUP_S / 3600
        one = a.params * save_bytes + TOKENIZER_BYTES
        keep = retention.get("checkpoints", "all")
        ck = (len(ckpts) if keep == "all" else 1) * one
        t.storage[f"checkpoints (published; retention {keep})"] = (
            t.storage.get(f"checkpoints (published; retention {keep})", 0) + ck)
        # state/: the published checkpoints are hard links into state/hf (no second copy), plus the
        # resumable trainer state; `spurious prune` drops it with retention.state: prune
        if retention.get("state", "keep") == "keep":
            if cfg["backend"] == "openrlhf":
                from .training.openrlhf_backend import DS_CHECKPOINTS_KEPT

                resumable = DS_CHECKPOINTS_KEPT * a.params * (2 + 12)
            else:
                resumable = a.params * (4 + 8)  # TRL's one checkpoint: fp32 weights + Adam moments
            unshared = (len(ckpts) - 1) * one if keep == "final" else 0  # pruned steps stay in state/hf
            t.storage["state/ (resumable; spurious prune deletes it)"] = (
                t.storage.get("state/ (resumable; spurious prune deletes it)", 0) + resumable + unshared)
    costs.append(t)

    # the mechanism map's checking runs: check.cells per model x 2 arms x seeds, check.steps each, on the
    # probe's rollout (which cells is known only after the map; the count is not)
    chk = cfg["audit"]["mechanism"]["check"]
    checked = [m for m in cfgmod.mechanism_models(cfg) if m in archs] if chk["enabled"] else []
    if checked:
        cp = cfg["audit"]["clip_probe"]
        rollout = (cp["prompts_per_rollout"] or g["prompts_per_rollout"]) * g["group_size"]
        c = Cost("train_mechanism_check", cpu=not gpu_jobs)
        slow = 1.0 if cfg["backend"] == "openrlhf" else HF_GENERATE_SLOWDOWN
        for m in checked:
            jobs = chk["cells"] * 2 * len(chk["seeds"])
            gen_tok = jobs * chk["steps"] * rollout * resp_train
            train_tok = jobs * chk["steps"] * rollout * (MEAN_PROMPT_TOKENS + resp_train)
            c.jobs += jobs
            c.gen_tokens += gen_tok
            c.train_tokens += train_tok
            c.gpu_hours += gen_hours(m, gen_tok, slow) + train_hours(m, train_tok) + jobs * n * JOB_STARTUP_S / 3600
            c.storage["checkpoints (final only)"] = (c.storage.get("checkpoints (final only)", 0)
                                                     + jobs * (archs[m].params * save_bytes + TOKENIZER_BYTES))
        costs.append(c)

    # evaluation
    bench_resp = {}
    for name, b in cfg["benchmarks"].items():
        rows = dataset_rows(cfg, b["dataset"])
        bench_resp[name] = None if rows is None else rows * b["samples"]
    resp_eval = _mean_resp(ev["max_new_tokens"])
    per_target = sum(v for v in bench_resp.values() if v is not None)
    missing = [k for k, v in bench_resp.items() if v is None]
    for phase, targets in (("evaluate_base", {m: 1 for m in archs}),
                           ("evaluate_run", {})):
        c = Cost(phase, cpu=not gpu_jobs, unknown=[f"{k} rows" for k in missing])
        if phase == "evaluate_run":
            for r in runs:
                if r.model in archs:
                    targets[r.model] = targets.get(r.model, 0) + len(ckpts)
            c.jobs = sum(1 for r in runs if r.model in archs)
        else:
            c.jobs = len(targets)
        for m, k in targets.items():
            toks = k * per_target * resp_eval
            c.gen_tokens += toks
            c.gpu_hours += gen_hours(m, toks, hf) + k * ENGINE_STARTUP_S / 3600
        c.storage["samples"] = _sample_bytes(sum(targets.values()) * per_target, ev["max_new_tokens"])
        c.gpu_hours += c.jobs * JOB_STARTUP_S / 3600
        costs.append(c)

    if aud["baselines"]["enabled"]:
        c = Cost("evaluate_baselines", cpu=not gpu_jobs, jobs=len(archs))
        names = cfgmod.baseline_benchmarks(cfg)
        # audit.baselines.samples per problem (config.baseline_benchmark), not the benchmark's own
        resp = sum((dataset_rows(cfg, cfg["benchmarks"][b]["dataset"]) or 0) * cfgmod.baseline_benchmark(cfg, b)["samples"]
                   for b in names) * len(aud["baselines"]["templates"])
        for m in archs:
            c.gen_tokens += resp * resp_eval
            c.gpu_hours += gen_hours(m, resp * resp_eval, hf) + JOB_STARTUP_S / 3600
        c.storage["samples"] = _sample_bytes(resp * len(archs), ev["max_new_tokens"])
        costs.append(c)

    if aud["contamination"]["enabled"]:
        c = Cost("audit_contamination", cpu=not gpu_jobs, jobs=len(archs))
        rows = 0
        for d in cfgmod.contamination_datasets(cfg):
            n_rows = dataset_rows(cfg, d)
            if n_rows is None:
                c.unknown.append(f"{d} rows")
                continue
            lim = aud["contamination"].get("limit")
            rows += min(n_rows, lim) if lim else n_rows
        new = aud["contamination"]["max_new_tokens"]
        for m in archs:
            c.gen_tokens += rows * _mean_resp(new)
            c.gpu_hours += gen_hours(m, rows * _mean_resp(new), hf) + JOB_STARTUP_S / 3600
        c.storage["samples"] = rows * len(archs) * (_mean_resp(new) * GZ_BYTES_PER_TOKEN * 2 + SAMPLE_ROW_BYTES)
        costs.append(c)

    probe_models = [m for m in cfgmod.probe_models(cfg) if m in archs]
    # the probes' rollouts are vLLM's on a GPU job (engine auto); their measurement samples always HF's
    rollout_slow = 1.0 if gpu_jobs and _probe_engine(cfg) == "vllm" else HF_GENERATE_SLOWDOWN
    if probe_models:
        cp = aud["clip_probe"]
        c = Cost("probe_clip_bias", cpu=not gpu_jobs, jobs=len(probe_models))
        b = (cp["prompts_per_rollout"] or g["prompts_per_rollout"]) * g["group_size"]
        nvar = len(cfgmod.probe_variants(cfg))
        for m in probe_models:
            roll_tok = cp["draws"] * b * resp_train
            meas_tok = cp["draws"] * (nvar + 1) * cp["eval_problems"] * cp["eval_samples"] * _mean_resp(
                ev["max_new_tokens"])
            train_tok = cp["draws"] * nvar * b * (MEAN_PROMPT_TOKENS + resp_train)
            c.gen_tokens += roll_tok + meas_tok
            c.train_tokens += train_tok
            c.gpu_hours += (gen_hours(m, roll_tok, rollout_slow) + gen_hours(m, meas_tok, HF_GENERATE_SLOWDOWN)
                            + train_hours(m, train_tok) + JOB_STARTUP_S / 3600)
        c.storage["probe json"] = len(probe_models) * cp["draws"] * nvar * 300
        costs.append(c)
    map_models = [m for m in cfgmod.mechanism_models(cfg) if m in archs]
    if map_models:
        cp, mech = aud["clip_probe"], aud["mechanism"]
        cells = cfgmod.mechanism_cells(cfg)
        c = Cost("probe_mechanism", cpu=not gpu_jobs, jobs=len(map_models) * len(cells))
        b = (cp["prompts_per_rollout"] or g["prompts_per_rollout"]) * g["group_size"]
        draws = mech["draws"] or cp["draws"]
        for m in map_models:  # per cell: 2 arms (clip, no_clip), as the probe with two variants
            roll_tok = len(cells) * draws * b * resp_train  # the probe's rollout engine (see above)
            meas_tok = len(cells) * draws * 3 * cp["eval_problems"] * cp["eval_samples"] * _mean_resp(
                ev["max_new_tokens"])
            train_tok = len(cells) * draws * 2 * b * (MEAN_PROMPT_TOKENS + resp_train)
            c.gen_tokens += roll_tok + meas_tok
            c.train_tokens += train_tok
            c.gpu_hours += (gen_hours(m, roll_tok, rollout_slow) + gen_hours(m, meas_tok, HF_GENERATE_SLOWDOWN)
                            + train_hours(m, train_tok) + len(cells) * JOB_STARTUP_S / 3600)
        c.storage["probe json"] = len(map_models) * len(cells) * draws * 2 * 300
        costs.append(c)
    for c in costs:
        if unknown:
            c.unknown.append(f"models without an architecture: {', '.join(unknown)}")
    return costs


# ---------------------------------------------------------------------------
# the report and the CLI
# ---------------------------------------------------------------------------


def format_memory(ests: list[Estimate], budget: int, *, verbose: bool = False) -> str:
    lines = [f"Memory plan (per GPU; budget resources.gpu_memory_gb = {budget / GB:g} GB; CPU jobs: host memory)",
             f"{'rule':<28} {'model':<26} {'dev':<4} {'peak':>10}  limiting phase: terms"]
    for e in ests:
        ph = e.peak
        mark = " !" if e.device == "gpu" and (ph.total > budget or e.extra_problems) else ""
        terms = ", ".join(f"{k} {_mem(v)}" for k, v in ph.terms.items())
        lines.append(f"{e.rule:<28} {e.model:<26} {e.device:<4} {_mem(ph.total):>10}{mark:2} {ph.name}: {terms}")
        if verbose:
            for other in e.phases:
                if other is not ph:
                    lines.append(f"{'':<61}{_mem(other.total):>10}   {other.name}: "
                                 + ", ".join(f"{k} {_mem(v)}" for k, v in other.terms.items()))
            if e.note:
                lines.append(f"{'':<64}({e.note})")
    return "\n".join(lines)


def format_cost(costs: list[Cost]) -> str:
    lines = ["Cost plan (assumptions: plan.THROUGHPUT_TOKENS_PER_S, MEAN_RESPONSE_FRACTION, ...)",
             f"{'phase':<22} {'jobs':>6} {'gen tokens':>12} {'train tokens':>13} {'GPU-hours':>11} {'storage':>11}"]
    tot_h = tot_b = 0.0
    for c in costs:
        hours = "CPU" if c.cpu else f"{c.gpu_hours:,.0f}"
        lines.append(f"{c.phase:<22} {c.jobs:>6} {c.gen_tokens:>12.3g} {c.train_tokens:>13.3g} {hours:>11} "
                     f"{_size(c.bytes):>11}")
        for k, v in c.storage.items():
            if len(c.storage) > 1:
                lines.append(f"{'':<70}{_size(v):>11}  {k}")
        if c.unknown:
            lines.append(f"{'':<24}not counted: {'; '.join(dict.fromkeys(c.unknown))}")
        tot_h += 0 if c.cpu else c.gpu_hours
        tot_b += c.bytes
    lines.append(f"{'total':<22} {'':>6} {'':>12} {'':>13} {tot_h:>11,.0f} {_size(tot_b):>11}")
    return "\n".join(lines)


def _size(b: float) -> str:
    for unit, scale in (("TB", TB), ("GB", GB), ("MB", 1e6)):
        if b >= scale:
            return f"{b / scale:,.1f} {unit}"
    return f"{b / 1e3:,.1f} kB"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spurious plan`` on the CLI's subparsers."""
    s = subparsers.add_parser("plan", help="per-rule GPU memory estimates, GPU-hours and storage of a config")
    s.add_argument("--configfile", type=Path, required=True)
    s.add_argument("--verbose-phases", action="store_true", help="every phase of every rule, not only the peak")
    s.add_argument("--json", type=Path, default=None, help="also write the plan as JSON here")
    s.set_defaults(func=cmd_plan)


def plan_dict(cfg: dict) -> dict:
    """The plan as plain data (for ``--json`` and the bench)."""
    ests, notes = memory_plan(cfg)
    budget = _budget(cfg)
    return {
        "budget_bytes": budget,
        "memory": [{"rule": e.rule, "model": e.model, "device": e.device, "gpus": e.gpus, "note": e.note,
                    "phases": [{"name": p.name, "total": p.total, "terms": p.terms} for p in e.phases]}
                   for e in ests],
        "cost": [{"phase": c.phase, "jobs": c.jobs, "gen_tokens": c.gen_tokens, "train_tokens": c.train_tokens,
                  "gpu_hours": None if c.cpu else c.gpu_hours, "storage": c.storage, "unknown": c.unknown}
                 for c in cost_plan(cfg)],
        "notes": notes,
        "problems": [p for e in ests for p in problems_of(e, budget)],
    }


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the memory and cost tables; exit 1 with the problems when a job cannot fit."""
    from . import config as cfgmod

    cfg = cfgmod.load(args.configfile)
    ests, notes = memory_plan(cfg)
    budget = _budget(cfg)
    print(format_memory(ests, budget, verbose=args.verbose_phases))
    print()
    print(format_cost(cost_plan(cfg)))
    for n in notes:
        print(f"note: {n}")
    if args.json:
        args.json.write_text(json.dumps(plan_dict(cfg), indent=1) + "\n")
    problems = [p for e in ests for p in problems_of(e, budget)]
    if problems:
        print(f"\nspurious plan: {args.configfile}: {len(problems)} job(s) cannot fit:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    return 0

