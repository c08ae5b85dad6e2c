"""Sending the texts through the served ensemble in batched requests, `concurrency` at a time, each request
timed as it is sent; throughput and latency of what was sent."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

from ..client import ClientError, EmotionClient, ModelNotServedError, RequestRecord


@dataclass
class Outcome:
    """The served answer for one text, or why there is none."""

    label: str | None = None
    scores: list[float] | None = None  # in the server's label order
    error: str | None = None
    kind: str | None = None  # refused, timeout, unavailable, overloaded, not_found, error


@dataclass
class SendResult:
    outcomes: list[Outcome]
    seconds: float  # wall time of the whole sending phase
    requests: list[RequestRecord]


# -- sending -----------------------------------------------------------------------------------


def send_texts(
    client: EmotionClient, texts: list[str], batch_size: int, concurrency: int, progress: bool | None = False
) -> SendResult:
    """Classifies `texts` in requests of `batch_size`, `concurrency` in flight; no error stops the run.

    A text the server refuses fails alone (EmotionClient retries its neighbours without it); a
    request that fails otherwise (timeout, connection, overload after retries) fails its texts.
    Every request sent is recorded with its own latency.
    """
    from tqdm.auto import tqdm

    labels = client.labels  # read once, before the threads start
    records: list[RequestRecord] = []
    previous = client.on_request

    def record(request: RequestRecord) -> None:
        records.append(request)  # list.append is atomic: safe from the worker threads
        if previous is not None:
            previous(request)

    def one_batch(batch: list[str]) -> list[Outcome]:
        try:
            predictions = client.classify_batch(batch)
        except ClientError as error:
            return [Outcome(error=str(error), kind=error.kind) for _ in batch]
        except Exception as error:  # an unexpected client failure is counted for its texts, never ends the run
            return [Outcome(error=f"{type(error).__name__}: {error}", kind="error") for _ in batch]
        return [
            Outcome(p.label, [p.scores[name] for name in labels])
            if p.error is None
            else Outcome(error=p.error, kind="refused")
            for p in predictions
        ]

    starts = range(0, len(texts), batch_size)
    outcomes: list[Outcome] = [Outcome()] * len(texts)
    client.on_request = record
    bar = tqdm(total=len(texts), unit="text", desc="evaluating", disable=None if progress is None else not progress)
    pool = ThreadPoolExecutor(max(1, concurrency))
    try:
        began = time.perf_counter()
        futures = {pool.submit(one_batch, texts[start : start + batch_size]): start for start in starts}
        for future in as_completed(futures):
            answers = future.result()
            start = futures[future]
            outcomes[start : start + len(answers)] = answers
            bar.update(len(answers))
        seconds = time.perf_counter() - began
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on Ctrl-C only the requests in flight finish
        bar.close()
        client.on_request = previous
    return SendResult(outcomes, seconds, records)


def latency_summary(result: SendResult) -> dict:
    """Throughput of the answered texts and the latency of every request that was answered."""
    answered = sum(outcome.error is None for outcome in result.outcomes)
    ok = np.array([r.seconds for r in result.requests if r.error is None]) * 1000
    return {
        "seconds": result.seconds,
        "samples_per_second": answered / result.seconds if result.seconds > 0 else None,
        "requests": len(result.requests),
        "failed_requests": sum(r.error is not None for r in result.requests),
        "retries": sum(r.attempts - 1 for r in result.requests),
        "latency_ms": {
            "p50": float(np.percentile(ok, 50)),
            "p95": float(np.percentile(ok, 95)),
            "p99": float(np.percentile(ok, 99)),
            "mean": float(ok.mean()),
            "max": float(ok.max()),
        }
        if ok.size
        else None,
    }


def served_max_length(client: EmotionClient) -> int:
    max_length = client.max_length
    if max_length is None:
        raise ModelNotServedError(f"model '{client.model}' has no tokenizer step with a max_length parameter")
    return max_length
