"""The benchmark's closed loop: the load generator (client.load) over the texts' batches, endlessly,
for a bounded time, and its senders for Triton's asyncio gRPC client and a plain JSON endpoint.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import numpy as np

from emotion_triton.client.load import drive, summarize

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
    batches = [texts[i : i + batch_size] for i in range(0, len(texts) - batch_size + 1, batch_size)]
    load = await drive([send] * concurrency, itertools.cycle(batches), warmup + seconds)
    measure_from = load.started + warmup
    summary = summarize((r for r in load.records if measure_from <= r.end < measure_from + seconds), seconds)
    latency = summary.latency_ms or dict.fromkeys(("mean", "p50", "p95", "p99"), math.nan)
    error = next((r.error for r in load.records if r.error is not None), None)
    return LoadResult(
        concurrency=concurrency,
        batch_size=batch_size,
        seconds=seconds,
        requests=summary.requests,
        texts=summary.texts,
        errors=summary.errors,
        texts_per_second=summary.texts_per_second,
        requests_per_second=summary.requests_per_second,
        mean_ms=latency["mean"],
        p50_ms=latency["p50"],
        p95_ms=latency["p95"],
        p99_ms=latency["p99"],
        loadgen_cpu_percent=100 * load.cpu_seconds / load.seconds,
        first_error=None if error is None else f"{type(error).__name__}: {str(error)[:200]}",
    )


def repeating_texts(texts: list[str], repeat_share: float, count: int, seed: int = 0) -> list[str]:
    """A stream of `count` texts in which `repeat_share` of them repeat an earlier text of the stream
    (retweets, templates), the others are new: for the response cache's benchmark, cache on vs off.

    New texts come from `texts` in order, made unique with a counter word once they run out (letters,
    not digits: a small vocabulary reads every number as the same unknown token). closed_loop cycles
    its list: a window that sends more than `count` texts repeats them all on its next pass.
    """
    if not 0.0 <= repeat_share < 1.0:
        raise ValueError(f"repeat_share must be in [0, 1), not {repeat_share}")
    rng = np.random.default_rng(seed)
    stream: list[str] = []
    fresh = 0
    for _ in range(count):
        if stream and rng.random() < repeat_share:
            stream.append(stream[int(rng.integers(len(stream)))])
        else:
            text, lap = texts[fresh % len(texts)], fresh // len(texts)
            stream.append(f"{text} {counter_word(lap)}" if lap else text)
            fresh += 1
    return stream


def counter_word(number: int) -> str:
    """1 -> "a", 26 -> "z", 27 -> "aa": bijective base 26."""
    word = ""
    while number > 0:
        number, digit = divmod(number - 1, 26)
        word = chr(ord("a") + digit) + word
    return word


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
