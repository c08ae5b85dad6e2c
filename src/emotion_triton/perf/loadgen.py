"""A closed-loop asyncio load generator: `concurrency` workers, each sending its next request
as soon as the previous one is answered, for a bounded time. perf_analyzer cannot be
installed here, so this is what measures every served system the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import numpy as np

Sender = Callable[[list[str]], Awaitable[None]]


@dataclass
class LoadResult:
    concurrency: int
    batch_size: int
    seconds: float
    requests: int
    texts: int
    errors: int
    texts_per_second: float
    requests_per_second: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    loadgen_cpu_percent: float  # CPU of this process per wall second (100 = one core)
    first_error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


async def closed_loop(
    send: Sender, texts: list[str], concurrency: int, batch_size: int, seconds: float, warmup: float = 1.0
) -> LoadResult:
    """Runs `concurrency` workers for `warmup` + `seconds`; the requests that end within those `seconds` count.

    Counting by end, over exactly `seconds`, keeps texts/s right when a request takes as long as
    the window: the window opens on a server already busy with the warm-up's requests, and the
    requests still in flight when it closes are not waited for in the rate.
    """
    batches = itertools.cycle([texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)])
    latencies: list[float] = []
    counts = {"requests": 0, "texts": 0, "errors": 0}
    errors: list[str] = []
    started = time.perf_counter()
    measure_from = started + warmup
    stop_at = measure_from + seconds

    async def worker() -> None:
        while True:
            begin = time.perf_counter()
            if begin >= stop_at:
                return
            batch = next(batches)
            try:
                await send(batch)
                failed = False
            except Exception as error:  # every failure is counted, whatever the client raises
                failed = True
                if not errors:
                    errors.append(f"{type(error).__name__}: {str(error)[:200]}")
            end = time.perf_counter()
            if measure_from <= end < stop_at:
                counts["requests"] += 1
                if failed:
                    counts["errors"] += 1
                else:
                    counts["texts"] += len(batch)
                    latencies.append(end - begin)

    cpu_before = time.process_time()
    await asyncio.sleep(0)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    finished = time.perf_counter()
    cpu = time.process_time() - cpu_before
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return LoadResult(
        concurrency=concurrency,
        batch_size=batch_size,
        seconds=seconds,
        requests=counts["requests"],
        texts=counts["texts"],
        errors=counts["errors"],
        texts_per_second=counts["texts"] / seconds,
        requests_per_second=(counts["requests"] - counts["errors"]) / seconds,
        mean_ms=float(ms.mean()),
        p50_ms=float(np.percentile(ms, 50)),
        p95_ms=float(np.percentile(ms, 95)),
        p99_ms=float(np.percentile(ms, 99)),
        loadgen_cpu_percent=100 * cpu / (finished - started),
        first_error=errors[0] if errors else None,
    )


def triton_grpc_sender(url: str, model: str, input_name: str, output_names: list[str]):
    """(send, close) for Triton's asyncio gRPC client."""
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    outputs = [grpcclient.InferRequestedOutput(name) for name in output_names]

    async def send(texts: list[str]) -> None:
        array = np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_)
        tensor = grpcclient.InferInput(input_name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        await client.infer(model, [tensor], outputs=outputs, client_timeout=60)

    return send, client.close


def json_http_sender(url: str):
    """(send, close) for a plain JSON endpoint taking {"text": ...}: one text per call."""
    import aiohttp

    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def send(texts: list[str]) -> None:
        for text in texts:
            async with session.post(url, json={"text": text}) as response:
                response.raise_for_status()
                await response.read()

    return send, session.close
