"""The one load generator: `concurrency` closed-loop workers over a work source, every request recorded.

Each worker sends its next item as soon as its previous one is answered. The work source is a
finite sequence sent once (the evaluation) or an endless one (`itertools.cycle`) bounded by
`seconds` (the benchmark, the soak). The engine is asyncio, so that the benchmark's asyncio
senders reach high concurrency without a thread each; a blocking sender (EmotionClient,
tritonclient's blocking clients) runs in a thread of its own worker, always the same one, so
per-thread clients stay with one worker. perf_analyzer cannot be installed here: this measures
every served system the same way. The statistics of what was sent are `summarize`'s alone.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# Called with one item of the work source (sized: len is the texts it carries); returns the
# answer, or is an `async def` whose awaitable does.
Sender = Callable[[Any], Any]


@dataclass
class Sent:
    """One request as the load generator saw it."""

    item: int  # the position of its item in the work source
    start: float  # time.perf_counter() when it was sent
    seconds: float
    texts: int
    answer: Any = None  # what the sender returned
    error: Exception | None = None  # what it raised instead

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclass
class Load:
    records: list[Sent]  # in the order the requests ended
    started: float  # time.perf_counter() when the workers started
    finished: float  # ... and when the last of them stopped
    cpu_seconds: float  # this process's CPU time over the run (every thread's)

    @property
    def seconds(self) -> float:
        return self.finished - self.started


async def drive(
    senders: Sequence[Sender],
    work: Iterable,
    seconds: float | None = None,
    on_sent: Callable[[Sent], None] | None = None,
) -> Load:
    """Runs one worker per sender (so `len(senders)` is the concurrency) until `work` is used up or,
    with `seconds`, until that long after the start; a request in flight then is waited for.

    Every exception a sender raises is recorded with its request, none stops the run. `on_sent`
    sees each record as its request ends, in the event loop's thread.
    """
    items = enumerate(work)
    records: list[Sent] = []
    started = time.perf_counter()
    stop_at = started + seconds if seconds is not None else math.inf
    loop = asyncio.get_running_loop()
    threads = [None if inspect.iscoroutinefunction(send) else ThreadPoolExecutor(1) for send in senders]

    async def worker(send: Sender, thread: ThreadPoolExecutor | None) -> None:
        while True:
            begin = time.perf_counter()
            taken = next(items, None) if begin < stop_at else None
            if taken is None:
                return
            index, item = taken
            answer, error = None, None
            try:
                answer = await (send(item) if thread is None else loop.run_in_executor(thread, send, item))
            except Exception as caught:  # every failure is recorded, whatever the sender raises
                error = caught
            record = Sent(index, begin, time.perf_counter() - begin, len(item), answer, error)
            records.append(record)
            if on_sent is not None:
                on_sent(record)

    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(worker(send, thread) for send, thread in zip(senders, threads, strict=True)))
    finally:
        for thread in threads:
            if thread is not None:  # on Ctrl-C only the requests in flight finish
                thread.shutdown(wait=True, cancel_futures=True)
    return Load(records, started, time.perf_counter(), time.process_time() - cpu_before)


def run(
    senders: Sequence[Sender],
    work: Iterable,
    seconds: float | None = None,
    on_sent: Callable[[Sent], None] | None = None,
) -> Load:
    """`drive` from blocking code, in an event loop of its own."""
    return asyncio.run(drive(senders, work, seconds, on_sent))


# -- statistics ----------------------------------------------------------------------------------


class Timed(Protocol):
    """A request record: a Sent, or the client's own RequestRecord (one per attempted batch)."""

    seconds: float
    texts: int
    error: object


@dataclass
class Summary:
    seconds: float  # the time the rates are over
    requests: int
    errors: int  # requests that failed
    texts: int  # texts of the answered requests
    texts_per_second: float
    requests_per_second: float  # answered requests
    latency_ms: dict[str, float] | None  # of the answered requests; None when none was


def latency_ms(seconds: Sequence[float]) -> dict[str, float] | None:
    """p50, p95, p99, mean and max in milliseconds; None for no latency at all."""
    if not len(seconds):
        return None
    ms = np.asarray(seconds, dtype=float) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }


def summarize(records: Iterable[Timed], seconds: float) -> Summary:
    """Rates over `seconds` and the latency of the answered requests among `records`."""
    records = list(records)
    answered = [r for r in records if r.error is None]
    texts = sum(r.texts for r in answered)
    return Summary(
        seconds=seconds,
        requests=len(records),
        errors=len(records) - len(answered),
        texts=texts,
        texts_per_second=texts / seconds if seconds > 0 else math.nan,
        requests_per_second=len(answered) / seconds if seconds > 0 else math.nan,
        latency_ms=latency_ms([r.seconds for r in answered]),
    )
