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

Why a subclass and not a fork: both hooks wrap the parent's method and change only its
result; TRL's sampling, masking, loss and logging stay its own.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from trl import GRPOTrainer

from ..grpo_math import check_whitening, stop_length, whiten_advantages


class FidelityGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` + stop strings with a loss mask that ends at the stop + batch whitening."""

    def __init__(self, *args: Any, stop_strings: Sequence[str] = (), advantage_whitening: str = "none",
                 **kwargs: Any) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self.advantage_whitening = check_whitening(advantage_whitening)
        super().__init__(*args, **kwargs)
        if self.stop_strings and not self.use_vllm and not self.use_transformers_continuous_batching:
            self.generation_config.stop_strings = list(self.stop_strings)

    # -- stop strings ------------------------------------------------------------------

    @contextlib.contextmanager
    def _generate_with_tokenizer(self) -> Iterator[None]:
        """Pass the tokenizer to ``generate`` of the model TRL unwraps (needed for stop strings)."""
        model = self.accelerator.unwrap_model(self.model_wrapped)
        had = "generate" in vars(model)
        original = model.generate
        model.generate = functools.partial(original, tokenizer=self._tokenizer)
        try:
            yield
        finally:
            if had:
                model.generate = original
            else:
                del model.generate

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                              has_tool_images=False):
        if not self.stop_strings:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                 has_tool_images)
        with self._generate_with_tokenizer():
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images)

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


def _ends_with_stop(ids: Sequence[int], decode: Any, stops: Sequence[str]) -> bool:
    """True when the whole completion is needed to reach a stop (it stopped on its last token)."""
    if not ids:
        return False
    return stop_length(ids, decode, stops) == len(ids) and any(s in decode(list(ids)) for s in stops)
