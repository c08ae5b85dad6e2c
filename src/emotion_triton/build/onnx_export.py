"""The classifier as ONNX, for ONNX Runtime on CPUs, checked before it is installed.

model.onnx is the same fine-tuned model as model.pt: a padded [rows, width] batch of token ids and
its attention mask in, logits out. The onnx variant's Python step (emotion_classifier/1/onnx_model.py)
cuts a dynamic batch's rows from their padding and runs them in the classifier's length buckets
(1/length_buckets.py); the checks here run the file exactly that way. fp32 must match the eager
model (max |logit difference| < 1e-4, same argmax) on the same dynamic batches as model.pt's check;
int8 is ONNX Runtime's dynamic quantization of that file, refused when it loses more validation
accuracy than the int8 limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..repository import DEFAULT_REPOSITORY, Ensemble
from . import torchscript_export
from .modeling import sorted_batch_logits
from .torchscript_export import LogitsOnly, length_buckets

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["logits"]
OPSET = 17
# The one way the project opens model.onnx: the classifier's own code (1/onnx_session.py).
open_session = Ensemble.read(DEFAULT_REPOSITORY).classifier_module("onnx_session").open_session


def export(model: torch.nn.Module, tokenizer, example_texts: list[str], max_length: int, path: Path) -> None:
    """Writes the fp32 eager model to `path`, rows and width dynamic."""
    padded = tokenizer(example_texts[:4], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    axes = {name: {0: "rows", 1: "width"} for name in INPUT_NAMES} | {"logits": {0: "rows"}}
    with torch.no_grad():
        # The TorchScript-based exporter: the dynamo exporter needs onnxscript, which is not installed.
        torch.onnx.export(
            LogitsOnly(model).eval(),
            (padded["input_ids"], padded["attention_mask"]),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization: int8 weights, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def run(onnx_session, input_ids, attention_mask) -> np.ndarray:
    """The logits of a padded [rows, width] batch."""
    feed = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
    return onnx_session.run(OUTPUT_NAMES, feed)[0]


def served_forward(onnx_session, buckets: dict) -> Callable[[list[dict]], tuple[np.ndarray, np.ndarray]]:
    """forward(tokenized requests) -> (logits, token_counts) of one dynamic batch, as the onnx variant runs it."""
    policy = length_buckets.LengthBuckets(buckets)

    def forward(requests: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        batch = [(np.asarray(r["input_ids"]), np.asarray(r["attention_mask"])) for r in requests]
        return length_buckets.run_in_chunks(length_buckets.unpadded_rows(batch), partial(run, onnx_session), policy)

    return forward


def predict_logits(onnx_session, tokenizer, texts: list[str], max_length: int, num_labels: int) -> np.ndarray:
    """Logits in the order of `texts`, in length-sorted batches (as modeling.predict_logits)."""
    return sorted_batch_logits(partial(run, onnx_session), tokenizer, texts, max_length, num_labels)


def check_against_eager(onnx_session, model, tokenizer, texts: list[str], max_length: int, buckets: dict) -> dict:
    """model.pt's check (the same dynamic batches and limits) on the fp32 file, run as the server runs it."""
    forward = served_forward(onnx_session, buckets)
    return torchscript_export.check_against_eager(forward, model, tokenizer, texts, max_length, "model.onnx")


def build_onnx(model, tokenizer, texts: list[str], max_length: int, folder: Path, int8: bool, buckets: dict) -> dict:
    """Writes folder/model.onnx (fp32, or int8 from the checked fp32 file, kept as model-fp32.onnx); returns its report.

    `model` is the fp32 eager model. The int8 accuracy gate is the caller's (it has the data).
    """
    started = time.perf_counter()
    fp32 = folder / "model-fp32.onnx"
    export(model, tokenizer, texts, max_length, fp32)
    report = {
        "precision": "fp32",
        "export_check": check_against_eager(open_session(fp32), model, tokenizer, texts, max_length, buckets),
    }
    target = folder / "model.onnx"
    if int8:  # the fp32 file stays beside it: installed instead if the int8 one fails the gate
        quantize_int8(fp32, target)
    else:
        fp32.replace(target)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    return report
