"""CPU stub of ``flash_attn.bert_padding`` (tests only): importable, unusable."""

from __future__ import annotations

from typing import Any

from einops import rearrange  # flash_attn re-exports it; OpenRLHF imports it from here

__all__ = ["index_first_axis", "pad_input", "rearrange", "unpad_input"]


def _unavailable(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("flash_attn is a CPU stub here")


index_first_axis = pad_input = unpad_input = _unavailable
