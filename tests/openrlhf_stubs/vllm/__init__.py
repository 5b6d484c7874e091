"""CPU stub of vLLM: the names OpenRLHF 0.11.2 imports at module level (tests only)."""

from __future__ import annotations

from typing import Any

__version__ = "0.29.0"  # the version OpenRLHF 0.11.2's [vllm] extra pins


class SamplingParams:
    """Keeps its keyword arguments as attributes, like the real one (enough for the executor)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("vllm is a CPU stub here: no engine can be built")

    @classmethod
    def from_engine_args(cls, *args: Any, **kwargs: Any) -> _Unavailable:
        raise RuntimeError("vllm is a CPU stub here: no engine can be built")


class AsyncEngineArgs(_Unavailable):
    pass


class AsyncLLMEngine(_Unavailable):
    pass


class LLM(_Unavailable):
    pass
