"""The int8 gate: an int8 file is installed only where it keeps the fp32 accuracy as it is served.

Dynamic int8 quantizes the activations of a forward pass with one scale for the whole pass, so a
text's answer depends on the texts that share the pass: measured over length-sorted batches, torch's
int8 model.pt kept 92.90% on the MiniLM fine-tune, served it scored 92.50% (lab/runs/2026-12-03-onnx).
The gate therefore runs the file that would be installed, fed as the server feeds it, in two
layouts, and holds the worse one to the limit: requests of `max_batch_size` texts in file order
(what client/evaluate.py sends) and one text per request (a lone client).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..evaluation.classification_metrics import classification_metrics

logger = logging.getLogger(__name__)

# The most validation accuracy (in percentage points) an int8 file may lose against fp32.
MAX_INT8_ACCURACY_LOSS_POINTS = 0.5

# forward(tokenized requests) -> logits [texts, labels] of one dynamic batch, as the server runs it.
BatchForward = Callable[[list[dict]], np.ndarray]


def logits_of(served_forward) -> BatchForward:
    """The logits of a file's served forward (torchscript_export's or onnx_export's served_forward)."""
    return lambda requests: np.asarray(served_forward(requests)[0])


def served_layouts(count: int, request_size: int) -> dict[str, list[list[int]]]:
    """The requests (lists of text indices) of each layout the gate measures."""
    return {
        f"requests of {request_size} texts in file order": [
            list(range(start, min(start + request_size, count))) for start in range(0, count, request_size)
        ],
        "one text per request": [[index] for index in range(count)],
    }


def served_accuracy(forward: BatchForward, tokenizer, data, max_length: int, request_size: int) -> dict:
    """Validation metrics of the worse layout, with every layout's accuracy."""
    texts, truth = data.splits["validation"].texts, data.ids("validation")
    measured = {}
    for layout, requests in served_layouts(len(texts), request_size).items():
        predicted = np.zeros(len(texts), dtype=np.int64)
        for request in requests:
            encoded = tokenizer(
                [texts[i] for i in request], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            predicted[request] = forward([encoded]).argmax(axis=1)
        measured[layout] = classification_metrics(truth, predicted.tolist(), data.label_names)
    worst = min(measured, key=lambda layout: measured[layout]["accuracy"])
    return {**measured[worst], "layout": worst, "accuracy_by_layout": {k: v["accuracy"] for k, v in measured.items()}}


def check(what: str, fp32: dict, int8: dict) -> dict:
    """The gate's verdict on one int8 file: its accuracy against fp32's, and whether it passes."""
    loss = 100 * (fp32["accuracy"] - int8["accuracy"])
    passed = loss <= MAX_INT8_ACCURACY_LOSS_POINTS
    logger.info(
        "%s: validation accuracy %.4f as served (%s; fp32 %.4f): loss %.2f points, %s",
        what,
        int8["accuracy"],
        int8["layout"],
        fp32["accuracy"],
        loss,
        "passed" if passed else f"over the {MAX_INT8_ACCURACY_LOSS_POINTS}-point limit",
    )
    return {
        "fp32_accuracy": fp32["accuracy"],
        "int8_accuracy": int8["accuracy"],
        "int8_layout": int8["layout"],
        "int8_accuracy_by_layout": int8["accuracy_by_layout"],
        "accuracy_loss_points": round(loss, 3),
        "limit_points": MAX_INT8_ACCURACY_LOSS_POINTS,
        "passed": passed,
    }
