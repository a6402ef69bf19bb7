"""Cutting a volume into inference blocks (core + halo + warm-up slices)."""
