"""Reliability and security against real tritonservers: bad input, overload, faults, shutdown, soak.

Every test ends by checking that the server it used (or the one that replaced it) is live and
ready and still gives the known answers: those of the eager model the tiny repository was
built from. Non-destructive tests use the shared session server; the others start their own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from tritonclient.utils import InferenceServerException

from emotion_triton.build.modeling import predict_logits, softmax
from emotion_triton.build.torchscript_export import trace
from emotion_triton.client import ClientError, EmotionClient, RequestTimeoutError, ServerOverloadedError
from emotion_triton.perf import soak
from emotion_triton.repository import CLASSIFIER_CONFIGS, Ensemble, set_parameter
from emotion_triton.serving.local_server import SHM_DIR, SHM_PREFIX, LocalServer, ServerOptions
from emotion_triton.serving.preflight import ServerError, free_port
from emotion_triton.serving.prometheus import triton_metrics

from .conftest import CLASSIFIERS, start_server

FAMILY = "distilbert"
KNOWN_TEXTS = [
    "i feel wonderful today",
    "this is terrifying",
    "😊🎉🔥",
    "Привет, мне сегодня грустно",
    "今日はとても悲しい",
    "مرحبا، أنا سعيد جدا",
    "i am so angry that they lied to me again " * 30,  # past the 128-token limit: truncated
]
# What no error message may show: tracebacks, the server's files, the Python backend's shared memory.
LEAKS = re.compile(r"Traceback|triton_python_backend_shm_region|site-packages|/tmp/|/home/|/work/|\.py\b")
SLOW_TEXT = "i keep thinking about the long road home and everything we left behind " * 3


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def known(built_repository):
    """The eager model's class probabilities of KNOWN_TEXTS: what every healthy server must answer."""
    repository, checkpoint = built_repository(FAMILY)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    return softmax(predict_logits(model, tokenizer, KNOWN_TEXTS, Ensemble.read(repository).max_length))


def assert_serving(http_url: str, grpc_url: str, known: np.ndarray) -> None:
    """Live, ready, and the known texts get the eager model's answers over gRPC and HTTP."""
    for endpoint in ("live", "ready"):
        status, _ = http_request(http_url, "GET", f"/v2/health/{endpoint}")
        assert status == 200, f"/v2/health/{endpoint} answered {status}"
    for url, protocol in ((grpc_url, "grpc"), (http_url, "http")):
        with EmotionClient(url, protocol, timeout=30) as client:
            predictions = client.classify(KNOWN_TEXTS)
            labels = client.labels
        assert not any(p.error for p in predictions)
        scores = np.array([[p.scores[label] for label in labels] for p in predictions])
        assert np.abs(scores - known).max() < 1e-4, f"{protocol}: answers differ from the eager model's"
        assert [p.label for p in predictions] == [labels[i] for i in known.argmax(axis=1)]


def assert_local_server_serving(server: LocalServer, known: np.ndarray) -> None:
    assert server.canary()
    assert_serving(server.http_url, server.grpc_url, known)


def http_request(url: str, method: str, path: str, body: bytes | None = None, headers=None, timeout=60.0):
    """(status, error message or parsed JSON) of one request on a fresh connection."""
    host, port = url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
    finally:
        connection.close()
    try:
        answer = json.loads(text) if text else {}
    except ValueError:
        return response.status, text
    return response.status, answer.get("error", answer) if isinstance(answer, dict) else answer


def http_infer(url: str, inputs: list[dict], model: str = "emotion", version: str | None = None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return http_request(url, "POST", path, json.dumps({"inputs": inputs}).encode())


def http_infer_bytes(url: str, texts: list[bytes]):
    """TEXT as raw bytes with the binary tensor extension: the only way to send invalid UTF-8 over HTTP."""
    payload = b"".join(len(t).to_bytes(4, "little") + t for t in texts)
    header = {"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES"}]}
    header["inputs"][0]["parameters"] = {"binary_data_size": len(payload)}
    head = json.dumps(header).encode()
    return http_request(
        url,
        "POST",
        "/v2/models/emotion/infer",
        head + payload,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))},
    )


def text_input(module, texts: list[bytes | str], name: str = "TEXT"):
    array = np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=np.object_).reshape(-1, 1)
    tensor = module.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_infer(url: str, inputs, model: str = "emotion", version: str = "", timeout: float = 60.0):
    """("OK", result) or (status name, message)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        return "OK", client.infer(model, inputs, model_version=version, client_timeout=timeout)
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode."), error.message()
    finally:
        client.close()


def assert_clear(message: str) -> None:
    assert message and not LEAKS.search(message), f"the message shows internals: {message[:300]!r}"


def metric(metrics_url: str, name: str, model: str) -> float:
    """The sum of a Triton metric over the models whose name matches `model` (a regular expression)."""
    return sum(v for (n, m), v in triton_metrics(metrics_url).items() if n == name and re.fullmatch(model, m))


def variant(
    source: Path,
    target: Path,
    checkpoint: Path | None = None,
    max_tokens_per_forward: int | None = None,
    queue_size=None,
    timeout_us=None,
) -> Path:
    """A copy of a built repository whose model.pt and Python-backend ONNX classifier run rows a few at a
    time (model.pt re-exported from `checkpoint` with a small `max_tokens_per_forward`), with
    another classifier queue size, or another default queue timeout in all three steps."""
    shutil.copytree(source, target)
    ensemble = Ensemble.read(target)
    if max_tokens_per_forward is not None:
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        slow = trace(model, tokenizer, KNOWN_TEXTS, ensemble.max_length, max_tokens_per_forward=max_tokens_per_forward)
        torch.jit.save(slow, ensemble.model_file)
        onnx_config = ensemble.config_path(ensemble.classifier, CLASSIFIER_CONFIGS["onnx"])
        set_parameter(onnx_config, "max_tokens_per_forward", str(max_tokens_per_forward))
    classifiers = [ensemble.config_path(ensemble.classifier, name) for name in (None, *CLASSIFIER_CONFIGS.values())]
    for config in classifiers:
        if queue_size is not None:
            config.write_text(re.sub(r"max_queue_size: \d+", f"max_queue_size: {queue_size}", config.read_text()))
    for config in (*classifiers, ensemble.config_path(ensemble.tokenizer), ensemble.config_path(ensemble.postprocess)):
        if timeout_us is not None:
            text = re.sub(
                r"default_timeout_microseconds: \d+", f"default_timeout_microseconds: {timeout_us}", config.read_text()
            )
            config.write_text(text)
    return target


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ServeProcess:
    """`python -m emotion_triton.commands.serve` in a subprocess (the serve_forever supervision), with its output."""

    def __init__(self, repository: Path, log_file: Path, *args: str):
        self.ports = [free_port() for _ in range(3)]
        self.http_url, self.grpc_url = f"127.0.0.1:{self.ports[0]}", f"127.0.0.1:{self.ports[1]}"
        self.metrics_url = f"http://127.0.0.1:{self.ports[2]}/metrics"
        command = [sys.executable, "-m", "emotion_triton.commands.serve", "--repository", str(repository)]
        command += ["--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1])]
        command += ["--metrics-port", str(self.ports[2]), "--log-file", str(log_file), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        self.seen: dict[int, psutil.Process] = {}  # every tritonserver and stub, killed if left behind
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line))

    def wait_for(self, fragment: str, timeout: float) -> float:
        """When a line containing `fragment` was printed; fails with the output after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                when, line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.output.append(line)
            if fragment in line:
                return when
        pytest.fail(f"no line with {fragment!r} within {timeout:g} s:\n{''.join(self.output)}")

    def rest_of_output(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get()[1])
        return "".join(self.output)

    def stubs(self) -> dict[str, psutil.Process]:
        """model name -> its Python backend stub (children of the tritonserver child)."""
        found = {}
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                args = child.cmdline()
                self.seen.setdefault(child.pid, child)
                if args and args[0].endswith("triton_python_backend_stub") and child.status() != psutil.STATUS_ZOMBIE:
                    found[Path(args[1]).parents[1].name] = child
            except psutil.Error:
                continue
        return found

    def shm_regions(self) -> set[str]:
        return {arg for stub in self.stubs().values() for arg in stub.cmdline() if arg.startswith(SHM_PREFIX)}

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for process in self.seen.values():  # nothing may outlive the test (psutil checks it is still the same)
            if running(process):
                with contextlib.suppress(psutil.Error):
                    process.kill()


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


# -- faults ----------------------------------------------------------------------------------------


def test_a_killed_stub_is_detected_and_tritonserver_restarted_until_restarts_run_out(built_repository, known, tmp_path):
    repository, _ = built_repository(FAMILY)
    serve = ServeProcess(
        repository,
        tmp_path / "triton.log",
        *("--canary-interval", "0.5", "--canary-failures", "2", "--max-restarts", "1", "--exit-timeout", "3"),
    )
    try:
        serve.wait_for("Ctrl-C stops it", 180)
        assert_serving(serve.http_url, serve.grpc_url, known)
        regions = serve.shm_regions()

        # The tokenizer's stub dies: Triton 2.51 stays "ready" and answers 500, the canary notices.
        stubs = serve.stubs()
        killed = time.monotonic()
        stubs["emotion_tokenizer"].kill()
        detected = serve.wait_for("restarting tritonserver (1/1)", 30)
        # two tokenizer instances: the canary reaches the dead one within a few checks
        assert re.search(r"Stub process 'emotion_tokenizer_0_\d' is not healthy", serve.output[-1])
        # Detected by the canary: its failures, in a row, up to --canary-failures, named the dead stub.
        failures = [line for line in serve.output if line.startswith("canary failed (")]
        assert failures[-1].startswith("canary failed (2/2)") and "emotion_tokenizer" in failures[-1], failures
        restarted = serve.wait_for("tritonserver restarted: the ensemble answers again", 180)
        print(
            f"killed tokenizer stub: detected after {detected - killed:.1f} s, serving again after {restarted - killed:.1f} s"
        )
        assert_serving(serve.http_url, serve.grpc_url, known)
        assert (
            set(serve.stubs()) == set(stubs)
            and serve.stubs()["emotion_tokenizer"].pid != stubs["emotion_tokenizer"].pid
        )
        regions |= serve.shm_regions()

        # The postprocess stub dies too: the one restart allowed is used up, so the server gives up.
        killed = time.monotonic()
        serve.stubs()["emotion_postprocess"].kill()
        code = serve.process.wait(60)
        output = serve.rest_of_output()
        assert code == 1, output
        assert "error: the ensemble stopped answering" in output and "emotion_postprocess_0_" in output, output
        print(f"killed postprocess stub: exit code {code} after {time.monotonic() - killed:.1f} s")
        assert "canary failed (2/2)" in output.split("error: the ensemble stopped answering")[0], output
        # Nothing is left behind: no process, no port, no shared memory of the killed stubs.
        assert not [process for process in serve.seen.values() if running(process)]
        assert not [key for key in regions if (SHM_DIR / key).exists()]
        for port in serve.ports:
            with pytest.raises(OSError):
                http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)
    finally:
        serve.close()


def test_sigterm_under_load_finishes_requests_in_flight_and_exits_in_time(built_repository, known, tmp_path):
    """SIGTERM to `python -m emotion_triton.commands.serve`, as the README's "Operating it" describes it.

    tritonserver closes its HTTP listener at once (new connections are refused) and keeps serving
    gRPC and the HTTP connections already open; the local server keeps it in that phase until the
    requests in flight are done (Triton 2.51 would otherwise refuse their next ensemble step). Then
    new requests are refused (gRPC NOT_FOUND, then UNAVAILABLE) and it exits.
    """
    source, checkpoint = built_repository(FAMILY)
    repository = variant(
        source,
        tmp_path / "repo",
        checkpoint,
        max_tokens_per_forward=128,
        timeout_us=30_000_000,  # the queue timeout is not what this test is about
    )
    exit_timeout = 20
    # The Python-backend classifier: only its one-row chunks keep a tiny model's requests in flight
    # for seconds (the native ones answer them within a metrics interval). Shutdown is the
    # server's and the supervisor's; the overload and bad-input tests cover every variant.
    serve = ServeProcess(
        repository, tmp_path / "triton.log", "--exit-timeout", str(exit_timeout), "--classifier", "onnx"
    )
    try:
        serve.wait_for("Ctrl-C stops it", 180)
        assert_serving(serve.http_url, serve.grpc_url, known)
        regions = serve.shm_regions()
        results, barrier = [], threading.Barrier(8 + 1)

        def in_flight(index: int) -> None:
            module = grpcclient if index % 2 else httpclient  # tritonclient.http: one client per thread
            client = module.InferenceServerClient(serve.grpc_url if index % 2 else serve.http_url)
            try:
                client.infer("emotion", [text_input(module, ["hello"])])  # the connection is open before the load
                barrier.wait(timeout=60)
                result = client.infer("emotion", [text_input(module, [SLOW_TEXT] * 64)])
                results.append(result.as_numpy("SCORES").shape)
            except InferenceServerException as error:
                results.append(f"{error.status()} {error.message()}")
            finally:
                client.close()  # a client that got its answer goes away

        threads = [threading.Thread(target=in_flight, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=60)
        deadline = time.monotonic() + 5
        while metric(serve.metrics_url, "nv_inference_pending_request_count", r"emotion_\w+") < 3:
            assert time.monotonic() < deadline, "the requests never reached the server"
            time.sleep(0.02)
        signalled = time.monotonic()  # at least three requests are queued or running in the ensemble's steps
        serve.process.send_signal(signal.SIGTERM)
        serve.wait_for("stopping tritonserver", 10)  # the signal went through the supervisor to tritonserver
        time.sleep(0.2)

        http_new, grpc_new = [], []
        while serve.process.poll() is None and time.monotonic() - signalled < exit_timeout + 10:
            start = time.monotonic()
            try:
                inputs = [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]
                http_new.append(http_infer(serve.http_url, inputs)[0])
            except OSError:
                http_new.append("refused")
            status, answer = grpc_infer(serve.grpc_url, [text_input(grpcclient, ["hi"])], timeout=exit_timeout)
            grpc_new.append((status, answer.as_numpy("SCORES").shape if status == "OK" else answer))
            assert time.monotonic() - start < 10, "a new request hung during shutdown"
            time.sleep(0.2)
        code = serve.process.wait(exit_timeout + 10)
        exited = time.monotonic() - signalled
        for thread in threads:
            thread.join(30)
        output = serve.rest_of_output()

        assert results == [(64, len(known[0]))] * 8, results  # every request in flight answered
        assert code == 0 and "tritonserver stopped (exit code 0)" in output, output
        assert exited < exit_timeout + 5, f"exited {exited:.1f} s after SIGTERM"
        assert http_new and set(http_new) == {"refused"}, http_new  # new HTTP connections: refused at once
        # gRPC: answered (correctly) while tritonserver drains, then refused (a request caught at the switch
        # is refused at its next step, "Server is stopping"), never answered again.
        statuses = [status for status, _ in grpc_new]
        refused = next((i for i, status in enumerate(statuses) if status != "OK"), len(statuses))
        assert refused < len(statuses), f"no new gRPC request was refused before the exit: {statuses}"
        assert set(statuses[refused:]) <= {"NOT_FOUND", "UNAVAILABLE"}, grpc_new
        assert all(answer == (1, len(known[0])) for status, answer in grpc_new if status == "OK")
        for _, message in grpc_new[refused:]:
            assert_clear(message)
            assert any(why in message for why in ("no available versions", "Server is stopping", "failed to connect"))
        assert not [key for key in regions if (SHM_DIR / key).exists()], "shared memory left behind"
        for port in serve.ports:  # free again
            with pytest.raises(OSError):
                http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)
    finally:
        serve.close()


@pytest.mark.parametrize(
    ("missing", "classifier"),
    [("model.onnx", "onnx"), ("model.onnx", "onnxruntime"), ("model.pt", "libtorch"), ("tokenizer.json", "onnx")],
)
def test_a_missing_model_file_is_refused_before_start(built_repository, tmp_path, missing, classifier):
    """Each variant needs its own model file (model.onnx or model.pt) and the tokenizer's."""
    source, _ = built_repository(FAMILY)
    repository = shutil.copytree(source, tmp_path / "repo")
    next(repository.glob(f"*/1/{missing}")).unlink()
    options = ServerOptions.on_free_ports(
        repository=repository,
        classifier=classifier,
    )
    with pytest.raises(ServerError, match=f"{missing} is missing: build the model with `python build/build.py"):
        LocalServer(options).preflight()


@pytest.mark.parametrize(
    ("broken", "how", "classifier"),
    [
        ("model.onnx", "missing", "onnxruntime"),
        ("model.pt", "missing", "libtorch"),
        ("tokenizer.json", "corrupt", "onnx"),
    ],
)
def test_the_server_refuses_to_start_on_a_broken_model_with_a_one_line_cause(
    built_repository, tmp_path, broken, how, classifier
):
    source, _ = built_repository(FAMILY)
    repository = shutil.copytree(source, tmp_path / "repo")
    target = next(repository.glob(f"*/1/{broken}"))
    if how == "missing":
        target.unlink()
    else:
        target.write_text('{"version": "1.0", "truncated')
    ports = [str(free_port()) for _ in range(3)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_triton.commands.serve",
            "--repository",
            str(repository),
            "--classifier",
            classifier,
        ]
        + ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1
    expected = "is missing: build the model with" if how == "missing" else "cannot be loaded ("
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert broken in result.stderr and expected in result.stderr, result.stderr
    for port in ports:  # no tritonserver was started
        with pytest.raises(OSError):
            http_request(f"127.0.0.1:{port}", "GET", "/v2/health/live", timeout=2)


# -- soak ------------------------------------------------------------------------------------------


def test_a_short_soak_answers_everything_and_keeps_memory_and_answers_steady(built_repository, known, tmp_path):
    """`make soak` in small: the same checks (soak.run), 12 s of load after a 3 s warm-up."""
    repository, _ = built_repository(FAMILY)
    server = start_server(repository, tmp_path)
    try:
        report = soak.run(soak.SoakOptions(seconds=12, warmup=3, concurrency=8, bad_share=0.15), server)
        print("\n".join(report.summary()))
        assert report.ok, report.violations
        assert (
            report.outcomes[("good", "ok")] > 50 and sum(n for (k, _), n in report.outcomes.items() if k == "bad") > 5
        )
        assert report.server_successes >= report.outcomes[("good", "ok")]
        assert_local_server_serving(server, known)
    finally:
        server.stop()
