"""The one load generator (client.load): workers over a work source, every request recorded, one summary."""

import asyncio
import itertools
import math
import threading
import time

from emotion_triton.client.load import drive, latency_ms, run, summarize


def test_a_finite_source_is_sent_once_and_every_request_recorded():
    def send(batch):
        time.sleep(0.002)
        if batch == ["bad"]:
            raise ValueError("refused")
        return [text.upper() for text in batch]

    work = [["a", "b"], ["bad"], ["c"]] * 4
    ended = []
    load = run([send] * 3, work, on_sent=ended.append)
    assert sorted(r.item for r in load.records) == list(range(len(work))) and ended == load.records
    for record in load.records:
        batch = work[record.item]
        assert record.texts == len(batch) and load.started <= record.start < record.end <= load.finished
        if batch == ["bad"]:
            assert isinstance(record.error, ValueError) and record.answer is None
        else:
            assert record.error is None and record.answer == [text.upper() for text in batch]


def test_a_blocking_sender_runs_in_one_thread_per_worker():
    """Per-thread clients (EmotionClient's HTTP ones) stay with their worker: one thread each, always the same."""
    threads: dict[int, set[str]] = {}

    def sender(worker: int):
        def send(batch):
            threads.setdefault(worker, set()).add(threading.current_thread().name)
            time.sleep(0.001)

        return send

    run([sender(i) for i in range(4)], [["t"]] * 40)
    assert len(threads) == 4 and all(len(names) == 1 for names in threads.values())
    assert len(set.union(*threads.values())) == 4 and threading.current_thread().name not in set.union(
        *threads.values()
    )


def test_an_endless_source_stops_after_its_seconds_and_waits_for_the_requests_in_flight():
    async def send(batch):
        await asyncio.sleep(0.05)

    load = asyncio.run(drive([send] * 5, itertools.cycle([["x"]]), seconds=0.2))
    assert 0.2 <= load.seconds < 1.0 and 5 <= len(load.records) <= 25  # 5 workers x 0.05 s requests
    assert all(r.start < load.started + 0.2 and r.end <= load.finished for r in load.records)


def test_the_summary_counts_answered_texts_and_the_latency_of_answered_requests_only():
    class Record:
        def __init__(self, seconds, texts, error=None):
            self.seconds, self.texts, self.error = seconds, texts, error

    records = [Record(0.010, 4), Record(0.020, 4), Record(0.030, 2), Record(5.0, 8, "timeout")]
    summary = summarize(records, seconds=2.0)
    assert (summary.requests, summary.errors, summary.texts) == (4, 1, 10)
    assert summary.texts_per_second == 5.0 and summary.requests_per_second == 1.5
    assert summary.latency_ms == {"p50": 20.0, "p95": 29.0, "p99": 29.8, "mean": 20.0, "max": 30.0}
    none = summarize([Record(1.0, 4, "refused")], seconds=1.0)
    assert none.latency_ms is None and none.texts_per_second == 0 and latency_ms([]) is None
    assert math.isnan(summarize([], seconds=0).texts_per_second)
