"""analysis phase."""
