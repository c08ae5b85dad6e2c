"""A fine-tuned checkpoint run eagerly: the reference `emotion-evaluate --compare-with` checks the served
ensemble against (emotion_triton.evaluation.server_accuracy.EagerReference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..evaluation.labelled_data import EvaluationError
from ..repository import DEFAULT_CHECKPOINT, OFFLINE_BUILD_COMMAND
from .modeling import checkpoint_labels, load_classifier, load_tokenizer, predict_logits, softmax


class CheckpointReference:
    """(tokenizer, model) of a fine-tuned checkpoint directory, loaded at once: before any request is sent."""

    def __init__(self, path: str):
        if not Path(path).is_dir():
            hint = f" (`{OFFLINE_BUILD_COMMAND}` writes it)" if Path(path) == DEFAULT_CHECKPOINT else ""
            raise EvaluationError(f"--compare-with needs a fine-tuned checkpoint directory; {path} is not one{hint}")
        try:
            self.tokenizer = load_tokenizer(path, "--compare-with")
            self.model = load_classifier(path, "--compare-with")
        except (OSError, ValueError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise EvaluationError(f"cannot load the checkpoint {path}: {first[:200]}") from error
        self.labels = checkpoint_labels(self.model)

    def probabilities(self, texts: list[str], max_length: int) -> np.ndarray:
        """Class probabilities in the checkpoint's label order, one row per text."""
        return softmax(predict_logits(self.model, self.tokenizer, texts, max_length))
