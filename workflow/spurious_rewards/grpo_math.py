"""GRPO maths shared by both training backends: advantage whitening and the stop-string cut.

Both backends (TRL in :mod:`spurious_rewards.training.trl_extensions`, OpenRLHF in
:mod:`spurious_rewards.training.openrlhf_patches`) call these functions, so "whitened as the authors
did" and "stopped at ``</answer>``" mean the same numbers and the same tokens in both.

* :func:`whiten_advantages`: the authors' fork of OpenRLHF 0.6 normalised the group-
  normalised advantages a second time across the whole rollout before every update
  (``replay_buffer.normalize("advantages")``): mean and variance over all response
  tokens of all ranks (each sequence weighted by its token count), then
  ``(A - mean) * rsqrt(max(var, 1e-8))``. Neither TRL nor OpenRLHF 0.11 does this for
  group-normalised advantages. It is not harmless: when the reward correlates with
  length, the token-weighted mean is not zero, so whitening gives every token of a
  zero-variance group a non-zero advantage and rescales the others.
* :func:`stop_length`: how many tokens of a completion to keep so that it ends with the
  token that completes the first stop string (vLLM's ``stop`` with
  ``include_stop_str_in_output=True``: the stop is kept, nothing after it is trained on).

Pure torch (and a decode callable), no trainer imports: both environments have torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: The authors' variance floor (``clamp(min=1e-8).rsqrt()``), also OpenRLHF 0.11's for gae/reinforce.
WHITEN_VAR_FLOOR = 1e-8

#: Allowed values of ``grpo.advantage_whitening``.
WHITENING_MODES: tuple[str, ...] = ("none", "batch_token")


def check_whitening(mode: str) -> str:
    """``mode`` if it is a known whitening mode, else ValueError naming the allowed ones."""
    if mode not in WHITENING_MODES:
        raise ValueError(f"grpo.advantage_whitening: {mode!r} is not allowed; allowed values: "
                         f"{', '.join(WHITENING_MODES)}")
    return mode


def whitening_stats(adv: Any, mask: Any, all_reduce: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """``(mean, rstd)`` of the advantages over the response tokens of the batch (of all ranks).

    ``adv`` is ``(B,)`` (one advantage per sequence, as TRL's) or ``(B, T)`` (per token, as
    OpenRLHF's); ``mask`` is ``(B, T)`` with 1 on response tokens. ``all_reduce`` sums a
    tensor across ranks (None: one process). Two passes, as the authors' code: the mean
    first, then the variance around it.
    """
    import torch

    mask = mask.to(torch.float64)
    adv = adv.to(torch.float64)
    tok = adv.unsqueeze(1).expand_as(mask) if adv.dim() == 1 else adv
    if tok.shape != mask.shape:
        raise ValueError(f"advantages {tuple(adv.shape)} do not match the mask {tuple(mask.shape)}")
    reduce = all_reduce or (lambda t: t)
    sums = reduce(torch.stack([(tok * mask).sum(), mask.sum()]))
    if float(sums[1]) <= 0:
        raise ValueError("whitening needs at least one response token in the batch")
    mean = sums[0] / sums[1]
    var = reduce(((tok - mean).pow(2) * mask).sum()) / sums[1]
    return mean, var.clamp(min=WHITEN_VAR_FLOOR).rsqrt()


def whiten_advantages(adv: Any, mask: Any, all_reduce: Callable[[Any], Any] | None = None) -> Any:
    """The authors' batch whitening: ``(adv - mean) * rsqrt(max(var, 1e-8))``, token-weighted.

    Same shape and dtype as ``adv``; positions outside ``mask`` are transformed too (they
    carry no loss). See :func:`whitening_stats` for the arguments.
    """
    mean, rstd = whitening_stats(adv, mask, all_reduce)
    return ((adv.to(mean.dtype) - mean) * rstd).to(adv.dtype)


def stop_length(ids: Sequence[int], decode: Callable[[Sequence[int]], str], stops: Sequence[str]) -> int:
    """Tokens of ``ids`` to keep: up to the token that completes the first stop string, else all.

    ``decode`` turns token ids into text (special tokens kept). The shortest prefix whose
    text contains a stop string is found by bisection (containing a stop is monotone in
    the prefix length), so a long completion costs O(log n) decodes.
    """
    if not stops or not ids:
        return len(ids)
    ids = list(ids)

    def has_stop(n: int) -> bool:
        text = decode(ids[:n])
        return any(s in text for s in stops)

    if not has_stop(len(ids)):
        return len(ids)
    lo, hi = 1, len(ids)  # has_stop(hi) holds; find the least such n
    while lo < hi:
        mid = (lo + hi) // 2
        if has_stop(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def completion_mask(completion_ids, eos_id: int):
    """1 up to and including the first EOS of each row, 0 after (TRL's completion mask)."""
    import torch

    is_eos = completion_ids == eos_id
    n = completion_ids.size(1)
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos.int().argmax(1), n))
    return (torch.arange(n, device=completion_ids.device).unsqueeze(0) <= first.unsqueeze(1)).float()
