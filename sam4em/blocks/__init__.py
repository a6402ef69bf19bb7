"""Cutting a volume into inference blocks (core, read box, warm-up slices)."""
