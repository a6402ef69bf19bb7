"""The SAM4EM model: LoRA image encoder, 3D memory, two-stage prompt-free decoding."""
