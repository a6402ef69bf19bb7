"""Dual-stage fine-tuning: stage 1 on 2D tiles, stage 2 on z-sequences with memory."""
