"""Loading sequence classifiers and running them eagerly (the reference for every parity check)."""

from __future__ import annotations

import numpy as np
import torch

from ..hub import from_hub_or_path


def load_tokenizer(name_or_path: str, option: str):
    from transformers import AutoTokenizer

    tokenizer = from_hub_or_path(AutoTokenizer.from_pretrained, name_or_path, "tokenizer", option)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{name_or_path}: a fast (Rust) tokenizer is needed to write tokenizer.json")
    return tokenizer


def load_classifier(name_or_path: str, option: str, label_names: list[str] | None = None):
    """A sequence classifier; with `label_names`, a new head of that many classes."""
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if label_names is not None:
        kwargs = {
            "num_labels": len(label_names),
            "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
            "ignore_mismatched_sizes": True,  # a base that already has a head gets a new one
        }
    return from_hub_or_path(AutoModelForSequenceClassification.from_pretrained, name_or_path, "model", option, **kwargs)


def checkpoint_labels(model) -> list[str]:
    id2label = model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def predict_logits(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
    """Logits of the eager model, in the order of `texts`; batches are length-sorted to skip padding."""
    model.eval()
    device = next(model.parameters()).device

    def forward(ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
        return model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu().numpy()

    return sorted_batch_logits(forward, tokenizer, texts, max_length, model.config.num_labels, batch_size)


def sorted_batch_logits(forward, tokenizer, texts: list[str], max_length: int, num_labels: int, batch_size: int = 64):
    """`forward(input_ids, attention_mask)` -> logits over length-sorted padded batches, in the order of `texts`."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    logits = np.zeros((len(texts), num_labels), dtype=np.float32)
    for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        logits[batch] = forward(padded["input_ids"], padded["attention_mask"])
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
