"""The offline build: fine-tune (or take) a checkpoint, export it to TorchScript and ONNX, check both
against the eager model and install them into the model repository (`pipeline.build`).

Needs torch and transformers (the `build` extra). The serving and client layers never import it
(import-linter contracts in pyproject.toml).
"""
