"""Reasoning-strategy classification of responses (never executed, only read)."""

from __future__ import annotations


def is_code(response: str) -> bool:
    """Code reasoning as the paper defines it: the response mentions "python" (case-insensitive)."""
    return "python" in response.lower()
