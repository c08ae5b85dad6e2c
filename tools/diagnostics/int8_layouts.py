"""Validation accuracy of torch's dynamic int8 under different batch layouts, in-process.

    .venv/bin/python tools/diagnostics/int8_layouts.py runs/minilm-offline/checkpoint results/bench/repo-int8

Why (lab/runs/2026-12-03-onnx): the build's int8 gate measures the eager int8 model on length-sorted
batches of 64; through the server the same weights lost more. Dynamic int8 quantizes each Linear's
input with one scale per forward pass, so the texts that share a pass change each other's answers.
The second argument is a repository built with --quantize int8 (make bench writes one).
"""

import argparse
import time

import numpy as np
import torch

from emotion_triton.build.modeling import checkpoint_labels, load_classifier, load_tokenizer, predict_logits
from emotion_triton.build.torchscript_export import ragged_batch
from emotion_triton.data import EMOTION_VALIDATION_FILE
from emotion_triton.evaluation.labelled_data import read_labelled
from emotion_triton.repository import Ensemble


def graph_logits(graph, tokenizer, texts: list[str], max_length: int, request_size: int) -> np.ndarray:
    """The exported graph on requests of `request_size` texts in file order, one request per execution."""
    logits = []
    with torch.inference_mode():
        for start in range(0, len(texts), request_size):
            request = tokenizer(
                texts[start : start + request_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            logits.append(graph(*ragged_batch([dict(request)]))[0].numpy())
    return np.concatenate(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("int8_repository")
    parser.add_argument("--data", default=str(EMOTION_VALIDATION_FILE))
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = read_labelled(args.data)
    tokenizer = load_tokenizer(args.checkpoint, "checkpoint")
    model = load_classifier(args.checkpoint, "checkpoint").eval()
    truth = np.array([checkpoint_labels(model).index(label) for label in rows.labels])
    int8 = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    ensemble = Ensemble.read(args.int8_repository)
    graph = torch.jit.load(str(ensemble.model_file))
    max_length = ensemble.max_length
    layouts = {
        "eager fp32, length-sorted batches of 64": lambda: predict_logits(model, tokenizer, rows.texts, max_length, 64),
        "eager int8, length-sorted batches of 64 (the build's gate)": lambda: predict_logits(
            int8, tokenizer, rows.texts, max_length, 64
        ),
        "eager int8, one text at a time": lambda: predict_logits(int8, tokenizer, rows.texts, max_length, 1),
        "int8 model.pt, requests of 64 texts in file order (as the evaluation client sends them)": lambda: graph_logits(
            graph, tokenizer, rows.texts, max_length, 64
        ),
        "int8 model.pt, one text per request": lambda: graph_logits(graph, tokenizer, rows.texts, max_length, 1),
    }
    for name, logits in layouts.items():
        started = time.perf_counter()
        accuracy = float((logits().argmax(axis=1) == truth).mean())
        print(f"{accuracy:.2%}  {name}  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
