"""Overload against a real tritonserver: refused fast while the answered latency stays bounded, and a
client's deadline failing alone; the server still gives the known answers after."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from emotion_triton.client import ClientError, EmotionClient, RequestTimeoutError, ServerOverloadedError
from tests.helpers.servers import CLASSIFIERS, start_server
from tests.helpers.triton_requests import (
    FAMILY,
    KNOWN_TEXTS,
    SLOW_TEXT,
    assert_local_server_serving,
    text_input,
    variant,
)

# -- overload --------------------------------------------------------------------------------------


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_overload_is_refused_fast_and_the_answered_latency_stays_bounded(built_repository, known, tmp_path, classifier):
    """A classifier with a queue of 4 requests and a 1 s queue timeout, flooded by 24 clients of 64 texts."""
    source, checkpoint = built_repository(FAMILY)
    queue_timeout = 1.0
    repository = variant(
        source,
        tmp_path / "repo",
        checkpoint,
        max_tokens_per_forward=64,  # slow: rows run one at a time
        queue_size=4,
        timeout_us=int(queue_timeout * 1e6),
    )
    server = start_server(repository, tmp_path, classifier=classifier)
    try:
        outcomes, records, retried = [], [], []
        stop_at = time.monotonic() + 6.0

        def flood(index: int) -> None:
            module = grpcclient if index % 2 else httpclient
            client = module.InferenceServerClient(server.grpc_url if index % 2 else server.http_url)
            tensor = text_input(module, [SLOW_TEXT] * 64)
            kwargs = {"client_timeout": 60} if index % 2 else {}
            try:
                while time.monotonic() < stop_at:
                    start = time.monotonic()
                    try:
                        client.infer("emotion", [tensor], **kwargs)
                        outcomes.append(("ok", time.monotonic() - start, ""))
                    except InferenceServerException as error:
                        outcomes.append((str(error.status()), time.monotonic() - start, error.message()))
            finally:
                client.close()

        def classify() -> None:  # the project's client: retries overload answers with backoff, reports them
            with EmotionClient(server.grpc_url, timeout=30, retries=3, on_request=records.append) as client:
                while time.monotonic() < stop_at:
                    try:
                        client.classify([SLOW_TEXT] * 64)
                    except ClientError as error:
                        retried.append(type(error))

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(24)]
        threads += [threading.Thread(target=classify) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

        answered = sorted(seconds for status, seconds, _ in outcomes if status == "ok")
        refused = sorted(seconds for status, seconds, msg in outcomes if "Exceeds maximum queue size" in msg)
        timed_out = [seconds for status, seconds, msg in outcomes if "Request timeout expired" in msg]
        others = [(s, m) for s, _, m in outcomes if s != "ok" and s not in ("503", "StatusCode.UNAVAILABLE")]
        assert not others, others[:3]  # every request answered: a result or an overload answer, nothing else
        assert len(answered) + len(refused) + len(timed_out) == len(outcomes)
        assert answered and refused, f"{len(answered)} answered, {len(refused)} refused: no overload reached"
        # A full queue refuses at once instead of queueing: refusals come back faster than answers.
        assert np.median(refused) < np.median(answered), (
            f"refusals {np.median(refused):.2f} s, answers {np.median(answered):.2f} s"
        )
        # Answered requests waited at most the three queue timeouts (tokenizer and postprocess 1 s each)
        # plus their compute: bounded, not growing with the flood. Generous for a loaded 2-core machine.
        p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))]
        assert p99 < 3 * queue_timeout + 7, f"p99 of answered requests {p99:.1f} s"
        # The project's client retried the overload answers and reported them.
        assert any(r.attempts > 1 for r in records), "EmotionClient never retried"
        assert set(retried) <= {ServerOverloadedError}
        assert all(r.error is None or isinstance(r.error, ServerOverloadedError) for r in records)
        time.sleep(queue_timeout)  # the flood's last requests leave the queues
        assert_local_server_serving(server, known)
    finally:
        server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_client_deadline_fails_alone_and_disturbs_nobody(served, known, protocol):
    server = served(FAMILY)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    problems, answers = [], []

    def steady() -> None:
        with EmotionClient(url, protocol, timeout=30) as client:
            for _ in range(8):
                try:
                    answers.append(client.classify(KNOWN_TEXTS))
                except ClientError as error:
                    problems.append(str(error))

    threads = [threading.Thread(target=steady) for _ in range(4)]
    for thread in threads:
        thread.start()
    with EmotionClient(url, protocol) as client:
        config = client.config
    kinds = []
    for _ in range(5):
        # Half a millisecond: less than tokenizing 64 texts takes, on either classifier variant.
        with EmotionClient(url, protocol, timeout=0.0005) as hurried:
            hurried._config = config  # the model configuration is known: the deadline is the inference's
            with pytest.raises(ClientError) as raised:
                hurried.classify([SLOW_TEXT] * 64)
            kinds.append(type(raised.value))  # the client's own deadline, not an answer that came late
    for thread in threads:
        thread.join(120)
    assert set(kinds) == {RequestTimeoutError}
    assert not problems and len(answers) == 32
    for predictions in answers:
        labels = list(predictions[0].scores)
        scores = np.array([[p.scores[label] for label in labels] for p in predictions])
        assert np.abs(scores - known).max() < 1e-4
    assert_local_server_serving(server, known)
