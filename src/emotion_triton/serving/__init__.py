"""The serving layer: the local tritonserver (CPU, loopback), its preflight checks, its supervision
by an inference canary, and Triton's PyTorch backend built for the local machine.

It never imports the build (import-linter contracts in pyproject.toml): building a model on the
first start is the `emotion-serve` command's step (emotion_triton.commands.serve).
"""
