"""The precision gates: an int8 or half-precision file is installed only where it keeps the fp32
accuracy as it is served; a file that fails is installed in fp32 instead.

Dynamic int8 quantizes the activations of a forward pass with one scale for the whole pass, so a
text's answer depends on the texts that share the pass: measured over length-sorted batches, torch's
int8 model.pt kept 92.90% on the MiniLM fine-tune, served it scored 92.50% (lab/runs/2026-12-03-onnx).
The gate therefore runs the file that would be installed, fed as the server feeds it, in two
layouts, and holds the worse one to the limit: requests of `max_batch_size` texts in file order
(what client/evaluate.py sends) and one text per request (a lone client). A half-precision file
(the GPU's model_gpu.pt) is held to the fp32 export in the same layouts, on its accuracy and on how
many labels it changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..evaluation.classification_metrics import classification_metrics

logger = logging.getLogger(__name__)

# The most validation accuracy (in percentage points) an int8 file may lose against fp32.
MAX_INT8_ACCURACY_LOSS_POINTS = 0.5
# A half-precision file: at most this many points of accuracy away from the fp32 export, and at least
# this share of the fp32 export's labels kept, in the worse layout (issue 30; measured in docs/performance.md).
MAX_HALF_ACCURACY_CHANGE_POINTS = 0.2
MIN_HALF_LABEL_AGREEMENT = 0.995

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


def served_predictions(forward: BatchForward, tokenizer, data, max_length: int, request_size: int) -> dict:
    """layout -> the label ids a file gives the validation texts, fed as the server feeds it."""
    texts = data.splits["validation"].texts
    predictions = {}
    for layout, requests in served_layouts(len(texts), request_size).items():
        predicted = np.zeros(len(texts), dtype=np.int64)
        for request in requests:
            encoded = tokenizer(
                [texts[i] for i in request], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            predicted[request] = forward([encoded]).argmax(axis=1)
        predictions[layout] = predicted.tolist()
    return predictions


def served_accuracy(predictions: dict, data) -> dict:
    """Validation metrics of the worse layout of `predictions` (served_predictions), with every layout's accuracy."""
    truth = data.ids("validation")
    measured = {
        layout: classification_metrics(truth, predicted, data.label_names) for layout, predicted in predictions.items()
    }
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


def check_half(what: str, fp32: dict, fp32_predicted: list[int], half_predictions: dict, data) -> dict:
    """The gate's verdict on a half-precision file: `half_predictions` its served_predictions; `fp32` the fp32
    validation metrics and `fp32_predicted` their labels. The fp32 export equals the eager fp32 model
    within 1e-4 in every layout (its export check), so these are the export's as served, at no extra
    pass over the data. Both limits hold in every layout."""
    half = served_accuracy(half_predictions, data)
    by_layout = {}
    for layout, predicted in half_predictions.items():
        agreement = sum(a == b for a, b in zip(predicted, fp32_predicted, strict=True)) / len(fp32_predicted)
        change = 100 * (half["accuracy_by_layout"][layout] - fp32["accuracy"])
        by_layout[layout] = {"label_agreement": round(agreement, 5), "accuracy_change_points": round(change, 3)}
    agreement = min(entry["label_agreement"] for entry in by_layout.values())
    change = max((entry["accuracy_change_points"] for entry in by_layout.values()), key=abs)
    passed = agreement >= MIN_HALF_LABEL_AGREEMENT and abs(change) <= MAX_HALF_ACCURACY_CHANGE_POINTS
    logger.info(
        "%s: validation accuracy %.4f as served (fp32 export %.4f), %.2f%% of its labels kept: %s",
        what,
        half["accuracy"],
        fp32["accuracy"],
        100 * agreement,
        "passed" if passed else "failed the gate",
    )
    return {
        "fp32_accuracy": fp32["accuracy"],
        "half_accuracy": half["accuracy"],
        "half_layout": half["layout"],
        "half_accuracy_by_layout": half["accuracy_by_layout"],
        "by_layout": by_layout,
        "label_agreement": agreement,
        "accuracy_change_points": change,
        "limit_points": MAX_HALF_ACCURACY_CHANGE_POINTS,
        "min_label_agreement": MIN_HALF_LABEL_AGREEMENT,
        "passed": passed,
    }
