"""The training engine every method trains through (accelerate-based)."""
