"""CPU stub of flash-attn: the names OpenRLHF 0.11.2 imports at module level (tests only)."""

__version__ = "2.8.3"  # the version OpenRLHF 0.11.2 pins
