"""Serve a fine-tuned transformer text classifier on NVIDIA Triton Inference Server."""
