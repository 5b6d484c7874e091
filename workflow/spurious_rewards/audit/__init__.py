"""audit phase."""
