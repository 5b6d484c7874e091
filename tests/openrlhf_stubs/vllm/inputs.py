"""CPU stub of ``vllm.inputs`` (tests only)."""

from __future__ import annotations


class TokensPrompt(dict):
    """A dict, as vLLM's TypedDict is at run time."""
