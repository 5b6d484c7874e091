"""evaluation phase."""
