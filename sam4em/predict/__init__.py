"""Inference: tiled, blended, memory-conditioned prediction of slice stacks and blocks."""
