"""Bad input against a real tritonserver: bad texts, a 50 MB request, bad requests among concurrent
good ones, malformed requests and JSON, the restricted APIs without the admin key. Each refused with a
clear 4xx (no leak of paths or tracebacks), and the server still gives the known answers after."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from emotion_triton.repository import Ensemble
from tests.helpers.servers import CLASSIFIERS
from tests.helpers.triton_requests import (
    FAMILY,
    KNOWN_TEXTS,
    LEAKS,
    assert_clear,
    assert_local_server_serving,
    grpc_infer,
    http_infer,
    http_infer_bytes,
    http_request,
    metric,
    text_input,
)

# -- bad input -------------------------------------------------------------------------------------

BAD_TEXTS = {
    "empty": (b"", "TEXT[1] is empty"),
    "whitespace": (b" \t\n  ", "TEXT[1] is empty"),
    "NUL": (b"hello\x00world", "TEXT[1] contains a NUL character"),
    "invalid UTF-8": (b"caf\xc3 \xff\xfe", "TEXT[1] is not valid UTF-8"),
    "1 MB": (b"a " * 500_000, "TEXT[1] is 1000000 bytes; the limit is 65536"),
}


@pytest.mark.parametrize("classifier", CLASSIFIERS)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_texts_are_refused_with_a_clear_invalid_argument(served, known, protocol, classifier):
    server = served(FAMILY, classifier)
    for name, (bad, expected) in BAD_TEXTS.items():
        batch = [b"i feel great", bad, b"i am scared"]  # the bad text in the middle of a batch
        if protocol == "http":
            status, message = http_infer_bytes(server.http_url, batch)
            assert status == 400, f"{name}: {status} {message}"
        else:
            status, message = grpc_infer(server.grpc_url, [text_input(grpcclient, batch)])
            assert status == "INVALID_ARGUMENT", f"{name}: {status} {message}"
        assert expected in message, f"{name}: {message}"
        assert_clear(message)
    assert_local_server_serving(server, known)  # emoji, Cyrillic, Japanese, Arabic and a truncated text included


def test_a_50_mb_request_is_refused_and_shared_memory_stays_bounded(served, known):
    server = served(FAMILY)
    one_text = json.dumps(
        {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["a " * (25 << 20)]}]}
    ).encode()
    many_texts = [b"word " * (160 << 10)] * 64  # 64 texts of 800 kB: 50 MiB over gRPC
    shm = [server.memory().shm]
    for _ in range(2):
        status, message = http_request(server.http_url, "POST", "/v2/models/emotion/infer", one_text)
        assert status == 400 and "TEXT[0] is 52428800 bytes; the limit is 65536" in message, (status, message)
        assert_clear(message)
        status, message = grpc_infer(server.grpc_url, [text_input(grpcclient, many_texts)])
        assert status == "INVALID_ARGUMENT" and "TEXT[0] is 819200 bytes; the limit is 65536" in message
        assert_clear(message)
        shm.append(server.memory().shm)
    # The Python backend copies inputs through its /dev/shm pool, which grows to the largest request
    # once and is reused after: the second pair of 50 MB requests costs nothing more.
    assert shm[1] - shm[0] <= 128 << 20, shm
    assert shm[2] == shm[1], shm
    assert_local_server_serving(server, known)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_bad_requests_among_concurrent_good_ones_fail_alone(served, known, classifier):
    """Bad requests land in the same dynamic batches as good ones; only they fail."""
    server = served(FAMILY, classifier)
    labels = Ensemble.read(server.options.repository).labels
    good_texts = KNOWN_TEXTS[:4]
    bad_requests = [
        ("emotion", [text_input(grpcclient, [b"fine", b""])], "TEXT[1] is empty"),
        ("emotion", [text_input(grpcclient, [b"\xff\xfe"])], "TEXT[0] is not valid UTF-8"),
        ("emotion", [text_input(grpcclient, [b"x" * 70_000])], "the limit is 65536"),
    ]
    for logits in (np.zeros((2, len(labels) + 1), np.float32), np.full((1, len(labels)), np.nan, np.float32)):
        tensor = grpcclient.InferInput("LOGITS", list(logits.shape), "FP32")
        tensor.set_data_from_numpy(logits)
        expected = "LOGITS has shape" if logits.shape[1] != len(labels) else "NaN or infinite"
        bad_requests.append(("emotion_postprocess", [tensor], expected))
    rounds, senders = 12, 8
    barrier = threading.Barrier(senders)
    problems, answered = [], []

    def tokenizer_counts() -> tuple[float, float]:
        """(executions, requests) of the tokenizer so far: fewer executions means batched requests."""
        url, model = server.metrics_url, "emotion_tokenizer"
        requests = metric(url, "nv_inference_request_success", model) + metric(
            url, "nv_inference_request_failure", model
        )
        return metric(url, "nv_inference_exec_count", model), requests

    before = tokenizer_counts()

    def sender(index: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for round_ in range(rounds):
                barrier.wait(timeout=60)
                if index < 2:  # two bad requests in every round, the other six good
                    model, inputs, expected = bad_requests[(round_ * 2 + index) % len(bad_requests)]
                    try:
                        client.infer(model, inputs, client_timeout=60)
                        problems.append(f"a bad request to {model} was answered")
                    except InferenceServerException as error:
                        if "INVALID_ARGUMENT" not in str(error.status()) or expected not in error.message():
                            problems.append(f"{model}: {error.status()} {error.message()}")
                        elif LEAKS.search(error.message()):
                            problems.append(f"leak: {error.message()}")
                    continue
                try:
                    result = client.infer("emotion", [text_input(grpcclient, good_texts)], client_timeout=60)
                    answered.append(result.as_numpy("SCORES"))
                except InferenceServerException as error:
                    problems.append(f"a good request failed: {error.status()} {error.message()}")
        finally:
            client.close()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not problems, problems[:5]
    assert len(answered) == rounds * (senders - 2)
    for scores in answered:
        assert np.abs(scores - known[: len(good_texts)]).max() < 1e-4
    executions, requests = (after - start for after, start in zip(tokenizer_counts(), before, strict=True))
    assert executions < requests, "the tokenizer never batched requests together: the test proved nothing"
    assert_local_server_serving(server, known)


def _inputs(module, shape, datatype="BYTES", name="TEXT", count=None):
    tensor = module.InferInput(name, shape, datatype)
    if datatype == "BYTES":
        tensor.set_data_from_numpy(np.array([b"hi"] * (count or int(np.prod(shape))), dtype=np.object_).reshape(shape))
    else:
        tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32))
    return tensor


# name: (inputs as HTTP JSON, gRPC inputs factory, model, version, HTTP status, gRPC status, message fragment)
MALFORMED = {
    "batch over max_batch_size": ([{"shape": [65, 1], "data": ["hi"] * 65}], 400, "batch-size must be <= 64"),
    "batch of zero": ([{"shape": [0, 1], "data": []}], 400, "TEXT"),
    "wrong datatype": ([{"shape": [1, 1], "datatype": "FP32", "data": [1.0]}], 400, "expects 'BYTES'"),
    "wrong shape": ([{"shape": [1, 2], "data": ["a", "b"]}], 400, "unexpected shape for input 'TEXT'"),
    "three dimensions": ([{"shape": [1, 1, 1], "data": ["a"]}], 400, "unexpected shape for input 'TEXT'"),
    "missing input": ([], 400, "missing required input(s) ['TEXT']"),
    "extra input": (
        [{"shape": [1, 1], "data": ["a"]}, {"name": "EXTRA", "shape": [1, 1], "data": ["b"]}],
        400,
        "EXTRA",
    ),
    "wrongly named input": ([{"name": "TXT", "shape": [1, 1], "data": ["a"]}], 400, "unexpected inference input 'TXT'"),
    "unknown model": ([{"shape": [1, 1], "data": ["a"]}], 404, "'no_such_model' is not found"),
    "unknown version": ([{"shape": [1, 1], "data": ["a"]}], 404, "'emotion' version 7 is not found"),
}
GRPC_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_a_clear_4xx(served, known, protocol):
    server = served(FAMILY)
    for name, (inputs, code, fragment) in MALFORMED.items():
        model = "no_such_model" if name == "unknown model" else "emotion"
        version = "7" if name == "unknown version" else ""
        inputs = [{"name": "TEXT", "datatype": "BYTES", **spec} for spec in inputs]
        if protocol == "http":
            status, message = http_infer(server.http_url, inputs, model, version or None)
            assert status == code, f"{name}: {status} {message}"
        else:
            tensors = []
            for spec in inputs:
                tensor = grpcclient.InferInput(spec["name"], spec["shape"], spec["datatype"])
                dtype = np.float32 if spec["datatype"] == "FP32" else np.object_
                data = [d.encode() if isinstance(d, str) else d for d in spec["data"]]
                tensor.set_data_from_numpy(np.array(data, dtype=dtype).reshape(spec["shape"]))
                tensors.append(tensor)
            status, message = grpc_infer(server.grpc_url, tensors, model, version)
            assert status == GRPC_STATUS[code], f"{name}: {status} {message}"
        assert fragment in message, f"{name}: {message}"
        assert_clear(message)
    assert_local_server_serving(server, known)


def test_malformed_json_is_refused_and_the_server_stays_up(served, known):
    """Triton 2.51's HTTP front end answers unparsable JSON with 500 (its own choice, not 400): clear, harmless."""
    server = served(FAMILY)
    for body, fragment in (
        (b'{"inputs": [ {"name": ', "failed to parse the request JSON buffer"),
        (b"hello", "failed to parse the request JSON buffer"),
        (b'{"inputs": 5}', "Unable to parse 'inputs'"),
        (b"\x00" * (1 << 20), "failed to parse the request JSON buffer"),
    ):
        status, message = http_request(server.http_url, "POST", "/v2/models/emotion/infer", body)
        assert status == 500 and fragment in message, (status, message)
        assert_clear(message)
    assert_local_server_serving(server, known)


def test_restricted_apis_are_refused_without_the_admin_key(served, known):
    server = served(FAMILY)
    key = server.options.admin_key
    reads = [
        ("GET", "/v2/systemsharedmemory/status"),
        ("GET", "/v2/cudasharedmemory/status"),
        ("POST", "/v2/repository/index"),
        ("GET", "/v2/logging"),
        ("GET", "/v2/trace/setting"),
    ]
    writes = [
        ("POST", "/v2/systemsharedmemory/region/x/register", b'{"key": "/x", "offset": 0, "byte_size": 64}'),
        ("POST", "/v2/repository/models/emotion/unload", b"{}"),
        ("POST", "/v2/logging", b'{"log_verbose_level": 1}'),
        ("POST", "/v2/trace/setting", b'{"trace_level": ["TIMESTAMPS"]}'),
    ]
    for method, path, *body in reads + writes:
        for headers in ({}, {"admin-key": "wrong"}):
            status, message = http_request(server.http_url, method, path, body[0] if body else None, headers)
            assert status == 403 and "This API is restricted" in message, (path, headers, status, message)
    for method, path in reads:
        status, _ = http_request(server.http_url, method, path, headers={"admin-key": key})
        assert status == 200, path

    # gRPC: the same APIs; Triton prefixes the header name with "triton-grpc-protocol-".
    client = grpcclient.InferenceServerClient(server.grpc_url)
    calls = ("get_system_shared_memory_status", "get_model_repository_index", "get_log_settings", "get_trace_settings")
    try:
        for call in calls:
            for headers in (None, {"triton-grpc-protocol-admin-key": "wrong"}, {"admin-key": key}):
                with pytest.raises(InferenceServerException, match="This protocol is restricted") as refused:
                    getattr(client, call)(headers=headers)
                assert str(refused.value.status()) == "StatusCode.UNAVAILABLE"
            getattr(client, call)(headers={"triton-grpc-protocol-admin-key": key})
        with pytest.raises(InferenceServerException, match="This protocol is restricted"):
            client.unload_model("emotion")
    finally:
        client.close()
    assert_local_server_serving(server, known)
