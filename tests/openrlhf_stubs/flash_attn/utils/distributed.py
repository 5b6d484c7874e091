"""CPU stub of ``flash_attn.utils.distributed`` (tests only): importable, unusable."""

from __future__ import annotations

from typing import Any


def all_gather(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("flash_attn is a CPU stub here")
