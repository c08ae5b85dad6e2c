"""The benchmark's load generator (emotion_lab.perf.loadgen) on fake senders: the closed loop counts
every request and error and measures a saturated server at its rate; repeating streams."""

import asyncio

import pytest

from emotion_lab.perf.loadgen import closed_loop, counter_word, repeating_texts


def test_closed_loop_counts_every_request_and_error():
    calls = []

    async def send(texts):
        calls.append(len(texts))
        await asyncio.sleep(0.002)
        if len(calls) % 5 == 0:
            raise RuntimeError("refused")

    result = asyncio.run(
        closed_loop(send, [f"t{i}" for i in range(20)], concurrency=3, batch_size=4, seconds=0.3, warmup=0.05)
    )
    assert result.requests > 10 and 0 < result.errors < result.requests
    assert result.texts == 4 * (result.requests - result.errors)
    assert result.first_error == "RuntimeError: refused"
    assert result.p50_ms <= result.p95_ms <= result.p99_ms


def test_closed_loop_measures_a_saturated_server_at_its_rate():
    """Requests that take as long as the window still give the server's true rate."""
    service_seconds, done = 0.01, []
    server = asyncio.Lock()  # one request at a time: the rate is 1 / service_seconds at most

    async def send(texts):
        async with server:
            await asyncio.sleep(service_seconds)
            done.append(asyncio.get_running_loop().time())

    # 30 clients: each request waits about 0.3 s, as long as the window.
    result = asyncio.run(closed_loop(send, ["text"], concurrency=30, batch_size=1, seconds=0.4, warmup=0.35))
    served_rate = (len(done) - 1) / (done[-1] - done[0])  # what the fake server did, start to end
    assert result.p50_ms > 200
    # Counting requests by start and dividing by the window plus the drain gave 0.57x here.
    assert 0.8 * served_rate < result.requests_per_second < 1.2 * served_rate


@pytest.mark.parametrize("share", [0.0, 0.3, 0.9])
def test_a_repeating_stream_repeats_the_share_asked(share):
    texts = [f"text {i}" for i in range(50)]
    stream = repeating_texts(texts, share, 4000, seed=1)
    repeats = len(stream) - len(set(stream))
    assert len(stream) == 4000 and abs(repeats / len(stream) - share) < 0.03, repeats
    assert stream == repeating_texts(texts, share, 4000, seed=1), "the same stream for the same seed"
    fresh = list(dict.fromkeys(stream))
    assert fresh[:50] == texts and fresh[50:52] == ["text 0 a", "text 1 a"], "new texts in order, then counted"
    assert [counter_word(n) for n in (1, 26, 27, 28, 702, 703)] == ["a", "z", "aa", "ab", "zz", "aaa"]
    with pytest.raises(ValueError, match="repeat_share"):
        repeating_texts(texts, 1.0, 10)
