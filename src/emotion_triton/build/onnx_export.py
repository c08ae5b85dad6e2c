"""The classifier as ONNX, for ONNX Runtime on CPUs (configs/onnx.pbtxt), checked before it is installed.

model.onnx is the same fine-tuned model as model.pt, exported as a plain padded-batch forward pass
(input_ids, attention_mask [rows, width] -> logits); the served model (emotion_classifier/1/onnx_model.py)
cuts Triton's requests into chunks of similar length around it. fp32 must match the eager model
(max |logit difference| < 1e-4, same argmax) on the same batches as model.pt's check; int8 is
ONNX Runtime's dynamic quantization of that file, refused when it loses more validation accuracy
than the int8 limit.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .modeling import sorted_batch_logits
from .torchscript_export import LOGIT_TOLERANCE, ExportCheckError, LogitsOnly, parity_cases

INPUT_NAMES = ["input_ids", "attention_mask"]  # onnx_model.py feeds these
OUTPUT_NAME = "logits"
OPSET = 17


def export(model: torch.nn.Module, tokenizer, example_texts: list[str], max_length: int, path: Path) -> None:
    """Writes the fp32 eager model's padded-batch forward pass to `path`, batch and length dynamic."""
    example = tokenizer(example_texts[:4], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    axes = {name: {0: "rows", 1: "width"} for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "rows"}}
    with torch.no_grad():
        # The TorchScript-based exporter: the dynamo exporter needs onnxscript, which is not installed.
        torch.onnx.export(
            LogitsOnly(model).eval(),
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime's dynamic int8 quantization: int8 weights, activations quantized per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def session(path: Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(onnx_session, input_ids, attention_mask) -> np.ndarray:
    feed = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
    return onnx_session.run([OUTPUT_NAME], feed)[0]


def predict_logits(onnx_session, tokenizer, texts: list[str], max_length: int, num_labels: int) -> np.ndarray:
    """Logits in the order of `texts`, in length-sorted batches (as modeling.predict_logits)."""
    return sorted_batch_logits(partial(run, onnx_session), tokenizer, texts, max_length, num_labels)


def check_against_eager(onnx_session, model, tokenizer, texts: list[str], max_length: int) -> dict:
    """The fp32 file on every request of model.pt's parity cases, each padded to its longest text."""
    model.eval()
    worst, checked = 0.0, 0
    with torch.no_grad():
        for case in parity_cases(texts):
            for batch in case:
                encoded = tokenizer(batch, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
                eager = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
                got = torch.from_numpy(run(onnx_session, encoded["input_ids"], encoded["attention_mask"]))
                diff = float((got - eager).abs().max())
                worst, checked = max(worst, diff), checked + len(batch)
                if diff >= LOGIT_TOLERANCE or not torch.equal(got.argmax(1), eager.argmax(1)):
                    raise ExportCheckError(
                        f"model.onnx differs from the eager model on {len(batch)} texts of up to "
                        f"{encoded['input_ids'].shape[1]} tokens: max |logit difference| {diff:.2e} "
                        f"(limit {LOGIT_TOLERANCE:.0e}); nothing was installed"
                    )
    return {"texts_checked": checked, "max_abs_logit_difference": worst, "tolerance": LOGIT_TOLERANCE}


def build_onnx(model, tokenizer, texts: list[str], max_length: int, folder: Path, int8: bool) -> dict:
    """Writes folder/model.onnx (fp32, or int8 from the checked fp32 file); returns its report.

    `model` is the fp32 eager model. The int8 accuracy gate is the caller's (it has the data).
    """
    started = time.perf_counter()
    fp32 = folder / "model-fp32.onnx"
    export(model, tokenizer, texts, max_length, fp32)
    report = {
        "precision": "fp32",
        "export_check": check_against_eager(session(fp32), model, tokenizer, texts, max_length),
    }
    target = folder / "model.onnx"
    if int8:
        quantize_int8(fp32, target)
        fp32.unlink()
        report["precision"] = "int8 dynamic (onnxruntime.quantization.quantize_dynamic, QInt8 weights)"
    else:
        fp32.replace(target)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    return report
