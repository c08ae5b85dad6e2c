"""What users would run instead of this project, measured by the benchmark.

- the Hugging Face `pipeline`, in-process;
- the eager model in-process with length-sorted batches (the practical ceiling);
- ONNX Runtime in-process on the repository's model.onnx (fp32 and int8): the fastest CPU runtime,
  the reference the served variants are held to;
- a plain FastAPI server around the `pipeline`, one text per call:
  `python -m emotion_lab.perf.baselines --checkpoint DIR --port 8080`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from pydantic import BaseModel

from emotion_triton.build.modeling import length_sorted_batches, predict_logits


class TextRequest(BaseModel):
    text: str


def padding_efficiency(lengths: list[int], batches: list[list[int]]) -> float:
    """Real tokens / computed tokens when each batch is padded to its longest row."""
    computed = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return sum(lengths[i] for batch in batches for i in batch) / computed


def load_pipeline(checkpoint: str, max_length: int):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=checkpoint, top_k=None, device="cpu")
    classifier.tokenizer.model_max_length = max_length
    return classifier


def measure_pipeline(classifier, texts: list[str], batch_size: int) -> dict:
    started = time.perf_counter()
    classifier(texts, batch_size=batch_size, truncation=True)
    seconds = time.perf_counter() - started
    lengths = [len(ids) for ids in classifier.tokenizer(texts, truncation=True)["input_ids"]]
    in_order = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    return {
        "batch_size": batch_size,
        "texts_per_second": len(texts) / seconds,
        "seconds": seconds,
        "padding_efficiency": padding_efficiency(lengths, in_order),
    }


def measure_sorted_eager(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> dict:
    started = time.perf_counter()
    predict_logits(model, tokenizer, texts, max_length, batch_size)
    seconds = time.perf_counter() - started
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return {
        "batch_size": batch_size,
        "texts_per_second": len(texts) / seconds,
        "seconds": seconds,
        "padding_efficiency": padding_efficiency(lengths, length_sorted_batches(lengths, batch_size)),
    }


def measure_onnx_runtime(
    path: Path, tokenizer, texts: list[str], max_length: int, threads: int, lone_texts: int = 200
) -> dict:
    """ONNX Runtime as a user would call it in-process: tokenizer, then `session.run`, timed together.

    texts/s over length-sorted batches of 64 (as `measure_sorted_eager`); p50 of one text at a time.
    """
    from emotion_triton.build.onnx_export import open_session, predict_logits, run

    onnx_session = open_session(path, threads)
    num_labels = run(onnx_session, [[1, 2]], [[1, 1]]).shape[1]  # the graph leaves the label count open
    predict_logits(onnx_session, tokenizer, texts[:64], max_length, num_labels)  # warm-up
    started = time.perf_counter()
    predict_logits(onnx_session, tokenizer, texts, max_length, num_labels)
    seconds = time.perf_counter() - started
    latencies = []
    for text in texts[:lone_texts]:
        started = time.perf_counter()
        encoded = tokenizer([text], truncation=True, max_length=max_length, return_tensors="np")
        run(onnx_session, encoded["input_ids"], encoded["attention_mask"])
        latencies.append(time.perf_counter() - started)
    latencies = latencies[20:]  # the first calls of a new shape size up ORT's buffers
    return {
        "batch_size": 64,
        "threads": threads,
        "texts_per_second": len(texts) / seconds,
        "p50_ms_one_text": statistics.median(latencies) * 1000,
        "lone_texts": len(latencies),
    }


def create_app(checkpoint: str, max_length: int = 128):
    """The FastAPI + pipeline server a user would write in ten lines."""
    from fastapi import FastAPI

    classifier = load_pipeline(checkpoint, max_length)
    app = FastAPI()

    @app.post("/classify")
    def classify(request: TextRequest):
        return classifier(request.text, truncation=True)

    @app.get("/health")
    def health():
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A plain FastAPI + pipeline server (the benchmark's baseline).")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.checkpoint, args.max_length), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
