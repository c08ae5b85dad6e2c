"""Sending the texts through the served ensemble in batched requests, `concurrency` at a time, each request
timed as it is sent; throughput and latency of what was sent."""

from __future__ import annotations

from dataclasses import dataclass

from ..client import ClientError, EmotionClient, ModelNotServedError, RequestRecord
from ..client.load import Sent, summarize
from ..client.load import run as run_load


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
    """Classifies `texts` in requests of `batch_size`, `concurrency` in flight (the load generator over
    the batches, once); no error stops the run.

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

    batches = [texts[start : start + batch_size] for start in range(0, len(texts), batch_size)]
    client.on_request = record
    bar = tqdm(total=len(texts), unit="text", desc="evaluating", disable=None if progress is None else not progress)
    try:
        load = run_load(
            [client.classify_batch] * max(1, concurrency), batches, on_sent=lambda sent: bar.update(sent.texts)
        )
    finally:
        bar.close()
        client.on_request = previous
    outcomes = [Outcome()] * len(texts)
    for sent in load.records:
        start = sent.item * batch_size
        outcomes[start : start + sent.texts] = _outcomes(sent, labels)
    return SendResult(outcomes, load.seconds, records)


def _outcomes(sent: Sent, labels: list[str]) -> list[Outcome]:
    """The outcome of each text of one batch: its predictions, or the error that failed them all."""
    error = sent.error
    if isinstance(error, ClientError):
        return [Outcome(error=str(error), kind=error.kind)] * sent.texts
    if error is not None:  # an unexpected client failure is counted for its texts, never ends the run
        return [Outcome(error=f"{type(error).__name__}: {error}", kind="error")] * sent.texts
    return [
        Outcome(p.label, [p.scores[name] for name in labels])
        if p.error is None
        else Outcome(error=p.error, kind="refused")
        for p in sent.answer
    ]


def latency_summary(result: SendResult) -> dict:
    """Throughput of the answered texts and the latency of every request that was answered."""
    summary = summarize(result.requests, result.seconds)
    return {
        "seconds": result.seconds,
        "samples_per_second": summary.texts_per_second if result.seconds > 0 else None,
        "requests": summary.requests,
        "failed_requests": summary.errors,
        "retries": sum(r.attempts - 1 for r in result.requests),
        "latency_ms": summary.latency_ms,
    }


def served_max_length(client: EmotionClient) -> int:
    max_length = client.max_length
    if max_length is None:
        raise ModelNotServedError(f"model '{client.model}' has no tokenizer step with a max_length parameter")
    return max_length
