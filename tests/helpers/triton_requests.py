"""Requests to a real tritonserver as the reliability tests send them (raw HTTP and gRPC, bytes and
malformed bodies), the check that a server still gives the known answers, and repository variants
that run rows a few at a time or with other queue sizes and timeouts (to saturate a server)."""

from __future__ import annotations

import http.client
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from tritonclient.utils import InferenceServerException

from emotion_triton.build.torchscript_export import bucket_parameters, trace
from emotion_triton.client import EmotionClient
from emotion_triton.repository import Ensemble, set_parameter
from emotion_triton.serving.local_server import LocalServer
from emotion_triton.serving.prometheus import triton_metrics

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
    """A copy of a built repository whose classifier variants run rows a few at a time (a small
    `max_tokens_per_forward` in the classifier's config, model.pt re-exported from `checkpoint` with it),
    with another classifier queue size, or another default queue timeout in all three steps. The
    variants' configs derive from the classifier's config.pbtxt when the server starts."""
    shutil.copytree(source, target)
    ensemble = Ensemble.read(target)
    classifier = ensemble.config_path(ensemble.classifier)
    if max_tokens_per_forward is not None:
        set_parameter(classifier, "max_tokens_per_forward", str(max_tokens_per_forward))
        tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
        slow = trace(model, tokenizer, KNOWN_TEXTS, ensemble.max_length, bucket_parameters(ensemble))
        torch.jit.save(slow, ensemble.model_file)
    classifiers = [classifier]
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
