"""CPU stub of ``flash_attn.utils`` (tests only)."""
