"""TRL 1.16 ``GRPOTrainer`` with the authors' two rollout-side behaviours, as a subclass.

:class:`FidelityGRPOTrainer` adds, each behind a constructor argument (both off by default,
so it is then exactly ``GRPOTrainer``):

* ``stop_strings`` (the r1 templates: ``["</answer>"]``): rollouts stop at the first stop
  string and keep it, as the authors' vLLM ``stop`` with ``include_stop_str_in_output``.
  Two parts, because TRL has no stop-string option of its own:

  - *stopping*: the strings go into TRL's ``generation_config`` (``stop_strings``, a
    transformers ``GenerationConfig`` field) and the tokenizer is handed to
    ``model.generate`` for the duration of :meth:`_generate_single_turn` (transformers
    needs it to build its ``StopStringCriteria``; TRL never passes one). Without this the
    model writes on to EOS or the length limit (a base model invents a new ``<|user|>``
    turn after its answer);
  - *masking*: after generation every completion is cut after the token that completes
    the first stop string (:func:`grpo_math.stop_length`). This is what keeps the loss
    right: transformers fills a stopped row with pad tokens, and TRL's completion mask
    ends at the first EOS only, so with ``pad != eos`` the pads after the stop would be
    trained on, and with ``pad == eos`` one pad would. Cut here, the completion ids (and
    so TRL's completion mask, its decoded text and the reward) end at the stop.

  The share of completions that ended at a stop is logged as ``completions/stopped_ratio``.
* ``advantage_whitening="batch_token"``: after TRL's group normalisation, the advantages of
  the whole rollout are whitened again, token-weighted, across all processes
  (:func:`grpo_math.whiten_advantages`), as the authors' ``replay_buffer.normalize``. TRL
  computes advantages once per generation batch in :meth:`_generate_and_score_completions`
  (the whole rollout when ``steps_per_generation`` spans it, as in :mod:`train`), so the
  hook is that method's output.

A third, for speed only: on TRL's transformers path (no vLLM) the rollouts are decoded by
:func:`generation.sample_ids`, the evaluation engine's loop, instead of ``model.generate``
(:meth:`_lean_generate`): the same distribution (temperature and top-p, nothing else, which
is all TRL asks for here), but rows that finished leave the batch, which took rollout
generation to 0.87x on the organisms' 128-response rollouts (bench/bench_generation.py
measures the loop). A generation config asking for anything else (top-k, min-p, a
repetition penalty, suppressed tokens) falls back to ``generate``.

Why a subclass and not a fork: the hooks wrap the parent's methods and change only their
result; TRL's sampling settings, masking, loss and logging stay its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from trl import GRPOTrainer

from ..generation import sample_ids
from ..grpo_math import check_whitening, stop_length, whiten_advantages


class FidelityGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` + stop strings with a loss mask that ends at the stop + batch whitening,
    decoding rollouts with :func:`generation.sample_ids` on the transformers path."""

    def __init__(self, *args: Any, stop_strings: Sequence[str] = (), advantage_whitening: str = "none",
                 **kwargs: Any) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self.advantage_whitening = check_whitening(advantage_whitening)
        super().__init__(*args, **kwargs)
        if self.stop_strings and not self.use_vllm and not self.use_transformers_continuous_batching:
            self.generation_config.stop_strings = list(self.stop_strings)

    # -- generation and stop strings ---------------------------------------------------

    @contextlib.contextmanager
    def _lean_generate(self) -> Iterator[None]:
        """Route ``generate`` of the model TRL unwraps through :func:`generation.sample_ids`.

        ``sample_ids`` returns the completion only; TRL expects ``generate``'s prompt +
        completion, so the prompt is put back in front. Stop strings become transformers'
        own ``StopStringCriteria`` (``generate`` needs the tokenizer to build it, which TRL
        never passes).
        """
        model = self.accelerator.unwrap_model(self.model_wrapped)
        had = "generate" in vars(model)
        original = model.generate
        tokenizer = self._tokenizer

        def generate(*args: Any, generation_config: Any = None, **kwargs: Any) -> Any:
            import torch

            cfg = generation_config
            if args or cfg is None or not _plain_sampling(cfg) or set(kwargs) - {"input_ids", "attention_mask"}:
                return original(*args, generation_config=cfg, tokenizer=tokenizer, **kwargs)
            criteria = None
            if cfg.stop_strings:
                from transformers.generation.stopping_criteria import StopStringCriteria

                criteria = StopStringCriteria(tokenizer, list(cfg.stop_strings))
            input_ids = kwargs["input_ids"]
            completion = sample_ids(model, input_ids, kwargs["attention_mask"],
                                    max_new_tokens=int(cfg.max_new_tokens),
                                    temperature=float(cfg.temperature) if cfg.do_sample else 0.0,
                                    top_p=1.0 if cfg.top_p is None else float(cfg.top_p),
                                    eos_token_id=cfg.eos_token_id, pad_token_id=int(cfg.pad_token_id),
                                    stop_criteria=criteria)
            return torch.cat([input_ids, completion], dim=1)

        model.generate = generate
        try:
            yield
        finally:
            if had:
                model.generate = original
            else:
                del model.generate

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                              has_tool_images=False):
        lean = not self.use_vllm and not self.use_transformers_continuous_batching and not multimodal_fields
        with self._lean_generate() if lean else contextlib.nullcontext():
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        if not self.stop_strings:
            return completion_ids, logprobs

        def decode(ids: Sequence[int]) -> str:
            return self._tokenizer.decode(list(ids), skip_special_tokens=False)

        keep = [stop_length(ids, decode, self.stop_strings) for ids in completion_ids]
        stopped = [k < len(ids) or _ends_with_stop(ids, decode, self.stop_strings)
                   for ids, k in zip(completion_ids, keep, strict=True)]
        completion_ids = [list(ids[:k]) for ids, k in zip(completion_ids, keep, strict=True)]
        if logprobs is not None:
            logprobs = [list(lp[:k]) for lp, k in zip(logprobs, keep, strict=True)]
        mode = "train" if self.model.training else "eval"
        if stopped:
            self._metrics[mode]["completions/stopped_ratio"].append(sum(stopped) / len(stopped))
        return completion_ids, logprobs

    # -- advantage whitening -----------------------------------------------------------

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self.advantage_whitening == "batch_token" and self.model.training:
            mask = output["completion_mask"]
            if "tool_mask" in output:
                mask = mask * output["tool_mask"]

            def all_reduce(t):
                return self.accelerator.reduce(t, reduction="sum") if self.accelerator.num_processes > 1 else t

            output["advantages"] = whiten_advantages(output["advantages"], mask, all_reduce)
        return output


def _plain_sampling(cfg: Any) -> bool:
    """True when a ``GenerationConfig`` asks only for what :func:`generation.sample_ids` does."""
    return (cfg.num_beams in (None, 1) and cfg.top_k in (None, 0) and cfg.min_p is None
            and cfg.repetition_penalty in (None, 1.0) and not cfg.suppress_tokens
            and not cfg.bad_words_ids and cfg.min_new_tokens in (None, 0)
            and cfg.num_return_sequences in (None, 1) and cfg.max_new_tokens is not None
            and cfg.pad_token_id is not None)


def _ends_with_stop(ids: Sequence[int], decode: Any, stops: Sequence[str]) -> bool:
    """True when the whole completion is needed to reach a stop (it stopped on its last token)."""
    if not ids:
        return False
    return stop_length(ids, decode, stops) == len(ids) and any(s in decode(list(ids)) for s in stops)
